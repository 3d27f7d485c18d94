#include "attentionPlugin/attentionPlugin.h"

#include "attentionPlugin/attentionKernel.h"
#include "common/pluginUtils.h"

#include <cuda_fp16.h>

#include <exception>
#include <utility>

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace mvt::plugin
{
AttentionPlugin::AttentionPlugin(std::string name, std::string nameSpace, float scale, int32_t layout, int32_t numHeads)
    : mName(std::move(name))
    , mNamespace(std::move(nameSpace))
    , mScale(scale)
    , mLayout(layout)
    , mNumHeads(numHeads)
{
    MVT_PLUGIN_VALIDATE(mScale > 0.F, kAttentionName << ": scale must be > 0, got " << mScale);
    MVT_PLUGIN_VALIDATE(mLayout == static_cast<int32_t>(AttentionLayout::kSEPARATE)
            || mLayout == static_cast<int32_t>(AttentionLayout::kPACKED),
        kAttentionName << ": layout must be 0 (separate Q, K, V) or 1 (packed QKV), got " << mLayout);
    MVT_PLUGIN_VALIDATE(mLayout == static_cast<int32_t>(AttentionLayout::kSEPARATE) || mNumHeads >= 1,
        kAttentionName << ": layout 1 (packed QKV) needs attribute num_heads >= 1");
}

IPluginCapability* AttentionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* AttentionPlugin::clone() noexcept
{
    try
    {
        return new AttentionPlugin(*this);
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttention::clone", e);
    }
    return nullptr;
}

char const* AttentionPlugin::getPluginName() const noexcept
{
    return kAttentionName;
}

char const* AttentionPlugin::getPluginVersion() const noexcept
{
    return kAttentionVersion;
}

char const* AttentionPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t AttentionPlugin::expectedInputs() const
{
    return mLayout == static_cast<int32_t>(AttentionLayout::kPACKED) ? 1 : 3;
}

AttentionPlugin::Shape AttentionPlugin::checkShape(nvinfer1::Dims const& dims, bool allowUnknown) const
{
    auto known = [allowUnknown](int64_t v) { return !(allowUnknown && v == -1); };
    auto const inRange = [&known](int64_t v, int64_t lo, int64_t hi) { return !known(v) || (v >= lo && v <= hi); };
    Shape s{-1, -1, -1, -1};
    std::string const where = std::string(kAttentionName) + " '" + mName + "': input " + dimsToString(dims);
    if (mLayout == static_cast<int32_t>(AttentionLayout::kPACKED))
    {
        MVT_PLUGIN_VALIDATE(dims.nbDims == 3, where << " must be [batch, tokens, 3*heads*head_dim] for layout 1");
        int64_t const c3 = dims.d[2];
        if (known(c3))
        {
            MVT_PLUGIN_VALIDATE(c3 % (3 * mNumHeads) == 0,
                where << ": last dimension must be divisible by 3 * num_heads = " << 3 * mNumHeads);
            s.headDim = static_cast<int32_t>(c3 / (3 * mNumHeads));
        }
        s.batch = static_cast<int32_t>(dims.d[0]);
        s.heads = mNumHeads;
        s.seqLen = static_cast<int32_t>(dims.d[1]);
    }
    else
    {
        MVT_PLUGIN_VALIDATE(dims.nbDims == 3 || dims.nbDims == 4,
            where << " must be [batch, heads, tokens, head_dim] or [batch*heads, tokens, head_dim] for layout 0");
        int32_t const off = dims.nbDims - 3;
        s.batch = static_cast<int32_t>(dims.d[0]);
        s.heads = off == 1 ? static_cast<int32_t>(dims.d[1]) : 1;
        s.seqLen = static_cast<int32_t>(dims.d[off + 1]);
        s.headDim = static_cast<int32_t>(dims.d[off + 2]);
        MVT_PLUGIN_VALIDATE(off == 0 || mNumHeads <= 0 || !known(s.heads) || s.heads == mNumHeads,
            where << ": dimension 1 (heads) differs from attribute num_heads = " << mNumHeads);
    }
    MVT_PLUGIN_VALIDATE(inRange(s.seqLen, 1, kAttentionMaxSeqLen),
        where << ": tokens (" << s.seqLen << ") must be in 1.." << kAttentionMaxSeqLen);
    MVT_PLUGIN_VALIDATE(inRange(s.headDim, kAttentionMinHeadDim, kAttentionMaxHeadDim),
        where << ": head_dim (" << s.headDim << ") must be in " << kAttentionMinHeadDim << ".."
              << kAttentionMaxHeadDim);
    return s;
}

int32_t AttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == expectedInputs() && nbOutputs == 1,
            kAttentionName << ": layout " << mLayout << " expects " << expectedInputs() << " inputs and 1 output, got "
                           << nbInputs << " and " << nbOutputs);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            checkShape(in[i].desc.dims, true);
            checkShape(in[i].max, false);
            MVT_PLUGIN_VALIDATE(in[i].desc.dims.nbDims == in[0].desc.dims.nbDims,
                kAttentionName << ": Q, K and V must have the same rank");
            MVT_PLUGIN_VALIDATE(in[i].desc.type == out[0].desc.type,
                kAttentionName << ": all inputs and the output must share one type");
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttention::configurePlugin", e);
    }
    return -1;
}

int32_t AttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == expectedInputs() && nbOutputs == 1,
            kAttentionName << ": layout " << mLayout << " expects " << expectedInputs() << " inputs and 1 output");
        MVT_PLUGIN_VALIDATE(inputTypes[0] == DataType::kFLOAT || inputTypes[0] == DataType::kHALF,
            kAttentionName << ": inputs must be FP32 or FP16");
        outputTypes[0] = inputTypes[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttention::getOutputDataTypes", e);
    }
    return -1;
}

int32_t AttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == expectedInputs() && nbOutputs == 1,
            kAttentionName << ": layout " << mLayout << " expects " << expectedInputs() << " inputs and 1 output");
        outputs[0] = inputs[0];
        if (mLayout == static_cast<int32_t>(AttentionLayout::kPACKED))
        {
            MVT_PLUGIN_VALIDATE(inputs[0].nbDims == 3, kAttentionName << ": layout 1 input must have rank 3");
            outputs[0].d[2] = exprBuilder.operation(
                nvinfer1::DimensionOperation::kFLOOR_DIV, *inputs[0].d[2], *exprBuilder.constant(3));
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttention::getOutputShapes", e);
    }
    return -1;
}

bool AttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    return desc.type == inOut[0].desc.type;
}

int32_t AttentionPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t AttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == expectedInputs() && nbOutputs == 1,
            kAttentionName << ": layout " << mLayout << " expects " << expectedInputs() << " inputs and 1 output");
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            checkShape(in[i].dims, false);
            MVT_PLUGIN_VALIDATE(in[i].dims.nbDims == in[0].dims.nbDims,
                kAttentionName << ": Q, K and V must have the same shape");
            for (int32_t d = 0; d < in[0].dims.nbDims; ++d)
            {
                MVT_PLUGIN_VALIDATE(in[i].dims.d[d] == in[0].dims.d[d],
                    kAttentionName << ": Q " << dimsToString(in[0].dims) << " and input " << i << " "
                                   << dimsToString(in[i].dims) << " must have the same shape");
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttention::onShapeChange", e);
    }
    return -1;
}

namespace
{
template <typename T>
cudaError_t run(bool packed, void const* const* inputs, void* output, int32_t batch, int32_t heads, int32_t seqLen,
    int32_t headDim, float scale, cudaStream_t stream)
{
    if (packed)
    {
        return launchAttention<T>(packedLayoutParams<T>(static_cast<T const*>(inputs[0]), static_cast<T*>(output),
                                      batch, heads, seqLen, headDim, scale),
            stream);
    }
    return launchAttention<T>(
        separateLayoutParams<T>(static_cast<T const*>(inputs[0]), static_cast<T const*>(inputs[1]),
            static_cast<T const*>(inputs[2]), static_cast<T*>(output), batch, heads, seqLen, headDim, scale),
        stream);
}
} // namespace

int32_t AttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        Shape const s = checkShape(inputDesc[0].dims, false);
        bool const packed = mLayout == static_cast<int32_t>(AttentionLayout::kPACKED);
        cudaError_t status = cudaErrorInvalidValue;
        if (inputDesc[0].type == DataType::kFLOAT)
        {
            status = run<float>(packed, inputs, outputs[0], s.batch, s.heads, s.seqLen, s.headDim, mScale, stream);
        }
        else if (inputDesc[0].type == DataType::kHALF)
        {
            status = run<__half>(packed, inputs, outputs[0], s.batch, s.heads, s.seqLen, s.headDim, mScale, stream);
        }
        MVT_PLUGIN_VALIDATE(status == cudaSuccess,
            kAttentionName << " '" << mName << "': launch failed for input " << dimsToString(inputDesc[0].dims)
                           << ": " << cudaGetErrorString(status));
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttention::enqueue", e);
    }
    return -1;
}

IPluginV3* AttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* AttentionPlugin::getFieldsToSerialize() noexcept
{
    mSerialFields.clear();
    mSerialFields.emplace_back("scale", &mScale, PluginFieldType::kFLOAT32, 1);
    mSerialFields.emplace_back("layout", &mLayout, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back("num_heads", &mNumHeads, PluginFieldType::kINT32, 1);
    mSerialFc.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialFc.fields = mSerialFields.data();
    return &mSerialFc;
}

AttentionPluginCreator::AttentionPluginCreator()
{
    mFields.emplace_back("scale", nullptr, PluginFieldType::kFLOAT32, 1);
    mFields.emplace_back("layout", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("num_heads", nullptr, PluginFieldType::kINT32, 1);
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

char const* AttentionPluginCreator::getPluginName() const noexcept
{
    return kAttentionName;
}

char const* AttentionPluginCreator::getPluginVersion() const noexcept
{
    return kAttentionVersion;
}

char const* AttentionPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

PluginFieldCollection const* AttentionPluginCreator::getFieldNames() noexcept
{
    return &mFc;
}

IPluginV3* AttentionPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        PluginField const* scale = findField(fc, "scale");
        PluginField const* layout = findField(fc, "layout");
        PluginField const* heads = findField(fc, "num_heads");
        MVT_PLUGIN_VALIDATE(scale != nullptr, kAttentionName << ": attribute 'scale' (float) is required");
        return new AttentionPlugin(name != nullptr ? name : "", mNamespace, readFloat(*scale),
            layout != nullptr ? readInt(*layout) : static_cast<int32_t>(AttentionLayout::kSEPARATE),
            heads != nullptr ? readInt(*heads) : 0);
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTAttentionCreator::createPlugin", e);
    }
    return nullptr;
}
} // namespace mvt::plugin
