#include "layerNormPlugin/layerNormPlugin.h"

#include "common/pluginUtils.h"
#include "layerNormPlugin/layerNormKernel.h"

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
namespace
{
constexpr float kDefaultEpsilon = 1e-5F;
} // namespace

LayerNormPlugin::LayerNormPlugin(
    std::string name, std::string nameSpace, float epsilon, std::vector<float> gamma, std::vector<float> beta)
    : mName(std::move(name))
    , mNamespace(std::move(nameSpace))
    , mEpsilon(epsilon)
    , mGamma(std::move(gamma))
    , mBeta(std::move(beta))
{
    auto const d = static_cast<int64_t>(mGamma.size());
    MVT_PLUGIN_VALIDATE(d >= kLayerNormMinWidth && d <= kLayerNormMaxWidth,
        kLayerNormName << ": gamma has " << d << " elements; supported widths are " << kLayerNormMinWidth << ".."
                       << kLayerNormMaxWidth);
    MVT_PLUGIN_VALIDATE(mBeta.size() == mGamma.size(),
        kLayerNormName << ": beta has " << mBeta.size() << " elements, gamma has " << mGamma.size());
    MVT_PLUGIN_VALIDATE(mEpsilon >= 0.F, kLayerNormName << ": epsilon must be >= 0, got " << mEpsilon);
}

// Copies attributes only: device weights stay with the original and are uploaded on demand.
LayerNormPlugin::LayerNormPlugin(LayerNormPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mName(other.mName)
    , mNamespace(other.mNamespace)
    , mEpsilon(other.mEpsilon)
    , mGamma(other.mGamma)
    , mBeta(other.mBeta)
{
}

IPluginCapability* LayerNormPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* LayerNormPlugin::clone() noexcept
{
    try
    {
        return new LayerNormPlugin(*this);
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNorm::clone", e);
    }
    return nullptr;
}

char const* LayerNormPlugin::getPluginName() const noexcept
{
    return kLayerNormName;
}

char const* LayerNormPlugin::getPluginVersion() const noexcept
{
    return kLayerNormVersion;
}

char const* LayerNormPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

void LayerNormPlugin::checkShape(nvinfer1::Dims const& dims, bool allowUnknown) const
{
    MVT_PLUGIN_VALIDATE(dims.nbDims >= 1, kLayerNormName << " '" << mName << "': input must have rank >= 1");
    int64_t const last = dims.d[dims.nbDims - 1];
    MVT_PLUGIN_VALIDATE((allowUnknown && last == -1) || last == static_cast<int64_t>(mGamma.size()),
        kLayerNormName << " '" << mName << "': last dimension of input " << dimsToString(dims)
                       << " must equal the " << mGamma.size() << " elements of gamma/beta");
}

int32_t LayerNormPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == 1 && nbOutputs == 1,
            kLayerNormName << ": expects 1 input and 1 output, got " << nbInputs << " and " << nbOutputs);
        checkShape(in[0].desc.dims, true);
        checkShape(in[0].max, false);
        MVT_PLUGIN_VALIDATE(in[0].desc.type == out[0].desc.type, kLayerNormName << ": output type must match input");
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNorm::configurePlugin", e);
    }
    return -1;
}

int32_t LayerNormPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == 1 && nbOutputs == 1, kLayerNormName << ": expects 1 input and 1 output");
        MVT_PLUGIN_VALIDATE(inputTypes[0] == DataType::kFLOAT || inputTypes[0] == DataType::kHALF,
            kLayerNormName << ": input must be FP32 or FP16");
        outputTypes[0] = inputTypes[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNorm::getOutputDataTypes", e);
    }
    return -1;
}

int32_t LayerNormPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == 1 && nbOutputs == 1, kLayerNormName << ": expects 1 input and 1 output");
        outputs[0] = inputs[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNorm::getOutputShapes", e);
    }
    return -1;
}

bool LayerNormPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1)
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

int32_t LayerNormPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t LayerNormPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        MVT_PLUGIN_VALIDATE(nbInputs == 1 && nbOutputs == 1, kLayerNormName << ": expects 1 input and 1 output");
        checkShape(in[0].dims, false);
        ensureWeightsOnDevice();
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNorm::onShapeChange", e);
    }
    return -1;
}

void LayerNormPlugin::ensureWeightsOnDevice()
{
    if (mGammaDev.get() != nullptr && mBetaDev.get() != nullptr)
    {
        return;
    }
    cudaError_t status = mGammaDev.upload(mGamma);
    if (status == cudaSuccess)
    {
        status = mBetaDev.upload(mBeta);
    }
    MVT_PLUGIN_VALIDATE(status == cudaSuccess,
        kLayerNormName << ": copying gamma/beta to the device failed: " << cudaGetErrorString(status));
}

int32_t LayerNormPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        // onShapeChange() uploads the weights before the first enqueue; this is a guard only.
        MVT_PLUGIN_VALIDATE(mGammaDev.get() != nullptr && mBetaDev.get() != nullptr,
            kLayerNormName << ": weights not on the device (onShapeChange failed or was not called)");
        nvinfer1::Dims const& dims = inputDesc[0].dims;
        int64_t rows = 1;
        for (int32_t i = 0; i + 1 < dims.nbDims; ++i)
        {
            rows *= dims.d[i];
        }
        auto const d = static_cast<int32_t>(mGamma.size());
        cudaError_t status = cudaErrorInvalidValue;
        if (inputDesc[0].type == DataType::kFLOAT)
        {
            status = launchLayerNorm<float>(static_cast<float const*>(inputs[0]), mGammaDev.get(), mBetaDev.get(),
                static_cast<float*>(outputs[0]), rows, d, mEpsilon, stream);
        }
        else if (inputDesc[0].type == DataType::kHALF)
        {
            status = launchLayerNorm<__half>(static_cast<__half const*>(inputs[0]), mGammaDev.get(), mBetaDev.get(),
                static_cast<__half*>(outputs[0]), rows, d, mEpsilon, stream);
        }
        MVT_PLUGIN_VALIDATE(status == cudaSuccess,
            kLayerNormName << " '" << mName << "': launch failed for input " << dimsToString(dims) << ": "
                           << cudaGetErrorString(status));
        return 0;
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNorm::enqueue", e);
    }
    return -1;
}

IPluginV3* LayerNormPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* LayerNormPlugin::getFieldsToSerialize() noexcept
{
    // Points into this object's members, which outlive the serialization call.
    mSerialFields.clear();
    mSerialFields.emplace_back("epsilon", &mEpsilon, PluginFieldType::kFLOAT32, 1);
    mSerialFields.emplace_back("gamma", mGamma.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(mGamma.size()));
    mSerialFields.emplace_back("beta", mBeta.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(mBeta.size()));
    mSerialFc.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialFc.fields = mSerialFields.data();
    return &mSerialFc;
}

LayerNormPluginCreator::LayerNormPluginCreator()
{
    mFields.emplace_back("epsilon", nullptr, PluginFieldType::kFLOAT32, 1);
    mFields.emplace_back("gamma", nullptr, PluginFieldType::kFLOAT32, 0);
    mFields.emplace_back("beta", nullptr, PluginFieldType::kFLOAT32, 0);
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

char const* LayerNormPluginCreator::getPluginName() const noexcept
{
    return kLayerNormName;
}

char const* LayerNormPluginCreator::getPluginVersion() const noexcept
{
    return kLayerNormVersion;
}

char const* LayerNormPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

PluginFieldCollection const* LayerNormPluginCreator::getFieldNames() noexcept
{
    return &mFc;
}

IPluginV3* LayerNormPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        // Build and runtime phases receive the same fields (the runtime ones come from
        // getFieldsToSerialize()), so one path serves both. Every array is copied here.
        PluginField const* eps = findField(fc, "epsilon");
        PluginField const* gamma = findField(fc, "gamma");
        PluginField const* beta = findField(fc, "beta");
        MVT_PLUGIN_VALIDATE(gamma != nullptr && beta != nullptr,
            kLayerNormName << ": attributes 'gamma' and 'beta' (float arrays of the normalised width) are required");
        float const epsilon = eps != nullptr ? readFloat(*eps) : kDefaultEpsilon;
        return new LayerNormPlugin(
            name != nullptr ? name : "", mNamespace, epsilon, readFloats(*gamma), readFloats(*beta));
    }
    catch (std::exception const& e)
    {
        reportException("MobileViTLayerNormCreator::createPlugin", e);
    }
    return nullptr;
}
} // namespace mvt::plugin
