/*
 * TensorRT IPluginV3 wrapper of the LayerNorm kernel: plugin "MobileViTLayerNorm", version "1",
 * namespace "". Attributes (PluginFields; see layerNormPlugin.yaml):
 *   epsilon FLOAT32[1] (default 1e-5), gamma FLOAT32[d], beta FLOAT32[d], 16 <= d <= 1024.
 * One input X [..., d] (FP32 or FP16, linear), one output Y of X's shape and type.
 */
#pragma once

#include "NvInferRuntime.h"

#include "common/deviceBuffer.h"

#include <string>
#include <vector>

namespace mvt::plugin
{
constexpr char const* kLayerNormName = "MobileViTLayerNorm";
constexpr char const* kLayerNormVersion = "1";

class LayerNormPlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Throws PluginError on invalid attributes; takes copies of gamma and beta.
    LayerNormPlugin(std::string name, std::string nameSpace, float epsilon, std::vector<float> gamma,
        std::vector<float> beta);
    LayerNormPlugin(LayerNormPlugin const& other);
    LayerNormPlugin& operator=(LayerNormPlugin const&) = delete;
    ~LayerNormPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void checkShape(nvinfer1::Dims const& dims, bool allowUnknown) const;
    void ensureWeightsOnDevice();

    std::string mName;
    std::string mNamespace;
    float mEpsilon;
    std::vector<float> mGamma;
    std::vector<float> mBeta;
    DeviceBuffer<float> mGammaDev;
    DeviceBuffer<float> mBetaDev;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialFc{};
};

class LayerNormPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    LayerNormPluginCreator();
    ~LayerNormPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFc{};
    std::string mNamespace;
};
} // namespace mvt::plugin
