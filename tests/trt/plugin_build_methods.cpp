// Exercises the build-time methods of libmobilevit_plugins.so's IPluginV3 wrappers the way a
// TensorRT builder calls them, through TensorRT's public interfaces only: the library is dlopen'ed,
// its creators come from getCreators(), and every call goes through the virtual interfaces
// (IPluginCreatorV3One, IPluginV3OneCore/Build/Runtime). No TensorRT library is needed: only its
// public headers (TENSORRT_ROOT). The one piece of TensorRT supplied here is a constant-folding
// IExprBuilder for getOutputShapes.
//
//   g++ -std=c++17 -I$TENSORRT_ROOT/include -I<cuda include> plugin_build_methods.cpp -ldl -o driver
//   ./driver /abs/libmobilevit_plugins.so        (tests/trt/test_plugin_build_methods.py does this)
//
// Prints one line per check ("ok ..." / "FAIL ...") and "checks: N passed, M failed"; exit code 1
// when any failed.
#include "NvInferRuntime.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
int gPassed = 0;
int gFailed = 0;

void check(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    (ok ? gPassed : gFailed)++;
}

// ---- a constant-folding expression builder (TensorRT's own is inside libnvinfer) -------------
class ConstExpr : public IDimensionExpr, public apiv::VDimensionExpr
{
public:
    explicit ConstExpr(int64_t v)
        : mValue(v)
    {
        mImpl = this;
    }
    bool isConstant() const override { return true; }
    int64_t getConstantValue() const override { return mValue; }
    bool isSizeTensor() const override { return false; }

private:
    int64_t mValue;
};

class FoldingBuilder : public IExprBuilder, public apiv::VExprBuilder
{
public:
    FoldingBuilder() { mImpl = this; }
    IDimensionExpr const* constant(int64_t v) override
    {
        mExprs.emplace_back(v);
        return &mExprs.back();
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        int64_t x = a.getConstantValue(), y = b.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return constant(x + y);
        case DimensionOperation::kPROD: return constant(x * y);
        case DimensionOperation::kFLOOR_DIV: return constant(x / y);
        case DimensionOperation::kCEIL_DIV: return constant((x + y - 1) / y);
        case DimensionOperation::kSUB: return constant(x - y);
        default: return nullptr;
        }
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }

private:
    std::deque<ConstExpr> mExprs;
};

DimsExprs exprs(FoldingBuilder& b, std::vector<int64_t> const& dims)
{
    DimsExprs e{};
    e.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        e.d[i] = b.constant(dims[i]);
    }
    return e;
}

Dims dimsOf(std::vector<int64_t> const& dims)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        d.d[i] = dims[i];
    }
    return d;
}

DynamicPluginTensorDesc desc(std::vector<int64_t> const& dims, DataType type, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc t{};
    t.desc.dims = dimsOf(dims);
    t.desc.type = type;
    t.desc.format = format;
    t.desc.scale = 1.F;
    t.min = t.opt = t.max = dimsOf(dims);
    return t;
}

std::string fieldsKey(PluginFieldCollection const* fc)
{
    // names, types, lengths and bytes of every field: equal keys = equal serialized attributes
    std::string key;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        size_t elem = f.type == PluginFieldType::kFLOAT32 || f.type == PluginFieldType::kINT32 ? 4 : 1;
        key += std::string(f.name) + "/" + std::to_string(static_cast<int>(f.type)) + "/" + std::to_string(f.length) + "/";
        key.append(static_cast<char const*>(f.data), elem * static_cast<size_t>(f.length));
        key += "|";
    }
    return key;
}

template <typename T>
T* as(IPluginV3* p, PluginCapabilityType type)
{
    return p == nullptr ? nullptr : static_cast<T*>(p->getCapabilityInterface(type));
}

// Serialization round trip: the fields a plugin serializes re-create, through its creator in the
// runtime phase, a plugin that serializes the same fields.
void roundTrip(IPluginCreatorV3One* creator, IPluginV3* plugin, std::string const& what)
{
    auto* rt = as<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    check(rt != nullptr, what + ": runtime capability interface");
    if (rt == nullptr)
    {
        return;
    }
    PluginFieldCollection const* fields = rt->getFieldsToSerialize();
    check(fields != nullptr && fields->nbFields > 0, what + ": getFieldsToSerialize returns fields");
    std::string const before = fieldsKey(fields);
    IPluginV3* again = creator->createPlugin("roundtrip", fields, TensorRTPhase::kRUNTIME);
    check(again != nullptr, what + ": creator re-creates the plugin from its serialized fields");
    auto* rt2 = as<IPluginV3OneRuntime>(again, PluginCapabilityType::kRUNTIME);
    check(rt2 != nullptr && fieldsKey(rt2->getFieldsToSerialize()) == before,
        what + ": the re-created plugin serializes the same fields");
    IPluginV3* copy = plugin->clone();
    auto* rt3 = as<IPluginV3OneRuntime>(copy, PluginCapabilityType::kRUNTIME);
    check(rt3 != nullptr && fieldsKey(rt3->getFieldsToSerialize()) == before, what + ": clone() keeps the fields");
    delete again;
    delete copy;
}

IPluginCreatorV3One* findCreator(IPluginCreatorInterface* const* creators, int32_t n, char const* name)
{
    for (int32_t i = 0; i < n; ++i)
    {
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            continue;
        }
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

void layerNorm(IPluginCreatorV3One* creator)
{
    int32_t const d = 144;
    std::vector<float> gamma(d), beta(d);
    for (int32_t i = 0; i < d; ++i)
    {
        gamma[i] = 1.F + 0.01F * static_cast<float>(i);
        beta[i] = -0.5F + 0.002F * static_cast<float>(i);
    }
    float eps = 1e-5F;
    std::vector<PluginField> f{{"epsilon", &eps, PluginFieldType::kFLOAT32, 1},
        {"gamma", gamma.data(), PluginFieldType::kFLOAT32, d}, {"beta", beta.data(), PluginFieldType::kFLOAT32, d}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};

    check(std::strcmp(creator->getPluginVersion(), "1") == 0 && std::strcmp(creator->getPluginNamespace(), "") == 0,
        "LayerNorm creator: version \"1\", namespace \"\"");
    PluginFieldCollection const* names = creator->getFieldNames();
    std::string listed;
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i)
    {
        listed += std::string(names->fields[i].name) + ",";
    }
    check(listed.find("epsilon") != std::string::npos && listed.find("gamma") != std::string::npos
            && listed.find("beta") != std::string::npos,
        "LayerNorm creator lists epsilon, gamma, beta (" + listed + ")");

    IPluginV3* p = creator->createPlugin("ln", &fc, TensorRTPhase::kBUILD);
    check(p != nullptr, "LayerNorm createPlugin (build phase) from the ONNX attributes");
    if (p == nullptr)
    {
        return;
    }
    auto* core = as<IPluginV3OneCore>(p, PluginCapabilityType::kCORE);
    auto* build = as<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    check(core != nullptr && std::strcmp(core->getPluginName(), "MobileViTLayerNorm") == 0,
        "LayerNorm core: plugin name");
    check(build != nullptr && build->getNbOutputs() == 1, "LayerNorm build: 1 output");
    if (build == nullptr)
    {
        return;
    }
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        DataType out = DataType::kINT8;
        check(build->getOutputDataTypes(&out, 1, &t, 1) == 0 && out == t, "LayerNorm output type follows input type");
    }
    DataType i8 = DataType::kINT8, out = DataType::kFLOAT;
    check(build->getOutputDataTypes(&out, 1, &i8, 1) != 0, "LayerNorm refuses an INT8 input type");

    FoldingBuilder eb;
    DimsExprs in = exprs(eb, {8, 256, d}), outShape{};
    check(build->getOutputShapes(&in, 1, nullptr, 0, &outShape, 1, eb) == 0 && outShape.nbDims == 3
            && outShape.d[2]->getConstantValue() == d && outShape.d[0]->getConstantValue() == 8,
        "LayerNorm output shape = input shape [8, 256, 144]");

    DynamicPluginTensorDesc io[2] = {desc({8, 256, d}, DataType::kFLOAT), desc({8, 256, d}, DataType::kFLOAT)};
    check(build->supportsFormatCombination(0, io, 1, 1) && build->supportsFormatCombination(1, io, 1, 1),
        "LayerNorm supports FP32 linear in and out");
    io[0] = desc({8, 256, d}, DataType::kHALF);
    io[1] = desc({8, 256, d}, DataType::kHALF);
    check(build->supportsFormatCombination(1, io, 1, 1), "LayerNorm supports FP16 linear in and out");
    io[1] = desc({8, 256, d}, DataType::kFLOAT);
    check(!build->supportsFormatCombination(1, io, 1, 1), "LayerNorm refuses FP16 in / FP32 out");
    io[0] = desc({8, 256, d}, DataType::kHALF, TensorFormat::kHWC8);
    check(!build->supportsFormatCombination(0, io, 1, 1), "LayerNorm refuses a non-linear format");

    DynamicPluginTensorDesc inD = desc({8, 256, d}, DataType::kFLOAT), outD = desc({8, 256, d}, DataType::kFLOAT);
    check(build->configurePlugin(&inD, 1, &outD, 1) == 0, "LayerNorm configurePlugin accepts [8, 256, 144] FP32");
    DynamicPluginTensorDesc badIn = desc({8, 256, 100}, DataType::kFLOAT), badOut = desc({8, 256, 100}, DataType::kFLOAT);
    check(build->configurePlugin(&badIn, 1, &badOut, 1) != 0,
        "LayerNorm configurePlugin refuses a last dim that differs from gamma's length");
    roundTrip(creator, p, "LayerNorm");

    std::vector<PluginField> shortGamma{{"gamma", gamma.data(), PluginFieldType::kFLOAT32, 8},
        {"beta", beta.data(), PluginFieldType::kFLOAT32, 8}};
    PluginFieldCollection bad{2, shortGamma.data()};
    check(creator->createPlugin("ln", &bad, TensorRTPhase::kBUILD) == nullptr,
        "LayerNorm creator refuses d = 8 (< 16) with nullptr, no abort");
    PluginFieldCollection none{0, nullptr};
    check(creator->createPlugin("ln", &none, TensorRTPhase::kBUILD) == nullptr,
        "LayerNorm creator refuses missing gamma/beta with nullptr");
    delete p;
}

void attention(IPluginCreatorV3One* creator, int32_t layout)
{
    std::string const tag = "Attention layout " + std::to_string(layout);
    float scale = 1.F / std::sqrt(36.F);
    int32_t heads = 4;
    std::vector<PluginField> f{{"scale", &scale, PluginFieldType::kFLOAT32, 1},
        {"layout", &layout, PluginFieldType::kINT32, 1}, {"num_heads", &heads, PluginFieldType::kINT32, 1}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    IPluginV3* p = creator->createPlugin("attn", &fc, TensorRTPhase::kBUILD);
    check(p != nullptr, tag + ": createPlugin (build phase) from the ONNX attributes");
    auto* build = as<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    if (build == nullptr)
    {
        check(false, tag + ": build capability interface");
        return;
    }
    int32_t const nIn = layout == 0 ? 3 : 1;
    std::vector<DataType> types(nIn, DataType::kHALF);
    DataType out = DataType::kINT8;
    check(build->getOutputDataTypes(&out, 1, types.data(), nIn) == 0 && out == DataType::kHALF,
        tag + ": FP16 inputs give an FP16 output");

    FoldingBuilder eb;
    DimsExprs outShape{};
    if (layout == 0)
    {
        std::vector<DimsExprs> in(3, exprs(eb, {8, 4, 256, 36}));
        check(build->getOutputShapes(in.data(), 3, nullptr, 0, &outShape, 1, eb) == 0 && outShape.nbDims == 4
                && outShape.d[3]->getConstantValue() == 36,
            tag + ": output shape = Q's [8, 4, 256, 36]");
    }
    else
    {
        DimsExprs in = exprs(eb, {8, 256, 3 * 4 * 36});
        check(build->getOutputShapes(&in, 1, nullptr, 0, &outShape, 1, eb) == 0 && outShape.nbDims == 3
                && outShape.d[2]->getConstantValue() == 4 * 36 && outShape.d[1]->getConstantValue() == 256,
            tag + ": QKV [8, 256, 432] gives O [8, 256, 144] (through the expression builder)");
        DimsExprs rank4 = exprs(eb, {8, 4, 256, 36});
        check(build->getOutputShapes(&rank4, 1, nullptr, 0, &outShape, 1, eb) != 0, tag + ": refuses a rank-4 QKV");
    }

    std::vector<int64_t> shape = layout == 0 ? std::vector<int64_t>{8, 4, 256, 36} : std::vector<int64_t>{8, 256, 432};
    std::vector<int64_t> oshape = layout == 0 ? shape : std::vector<int64_t>{8, 256, 144};
    std::vector<DynamicPluginTensorDesc> io;
    for (int32_t i = 0; i < nIn; ++i)
    {
        io.push_back(desc(shape, DataType::kHALF));
    }
    io.push_back(desc(oshape, DataType::kHALF));
    bool all = true;
    for (int32_t pos = 0; pos <= nIn; ++pos)
    {
        all = all && build->supportsFormatCombination(pos, io.data(), nIn, 1);
    }
    check(all, tag + ": supports FP16 linear on every input and the output");
    io[nIn] = desc(oshape, DataType::kFLOAT);
    check(!build->supportsFormatCombination(nIn, io.data(), nIn, 1), tag + ": refuses an output type != input type");
    io[nIn] = desc(oshape, DataType::kHALF);
    check(build->configurePlugin(io.data(), nIn, &io[nIn], 1) == 0, tag + ": configurePlugin accepts the MobileViT-S shape");
    std::vector<DynamicPluginTensorDesc> big;
    std::vector<int64_t> bad = layout == 0 ? std::vector<int64_t>{8, 4, 256, 100} : std::vector<int64_t>{8, 256, 1200};
    for (int32_t i = 0; i < nIn; ++i)
    {
        big.push_back(desc(bad, DataType::kHALF));
    }
    big.push_back(desc(bad, DataType::kHALF));
    check(build->configurePlugin(big.data(), nIn, &big[nIn], 1) != 0, tag + ": configurePlugin refuses head dim 100 (> 64)");
    roundTrip(creator, p, tag);
    delete p;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s /abs/libmobilevit_plugins.so\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    check(lib != nullptr, std::string("dlopen ") + argv[1] + (lib ? "" : std::string(": ") + dlerror()));
    if (lib == nullptr)
    {
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    check(getCreators != nullptr, "the library exports getCreators");
    if (getCreators == nullptr)
    {
        return 1;
    }
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    check(n == 2, "getCreators returns 2 creators (got " + std::to_string(n) + ")");
    IPluginCreatorV3One* ln = findCreator(creators, n, "MobileViTLayerNorm");
    IPluginCreatorV3One* attn = findCreator(creators, n, "MobileViTAttention");
    check(ln != nullptr, "a V3One creator named MobileViTLayerNorm");
    check(attn != nullptr, "a V3One creator named MobileViTAttention");
    if (ln != nullptr)
    {
        layerNorm(ln);
    }
    if (attn != nullptr)
    {
        attention(attn, 0);
        attention(attn, 1);
    }
    std::printf("checks: %d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}
