/*
 * TensorRT IPluginV3 wrapper of the fused attention kernel: plugin "MobileViTAttention",
 * version "1", namespace "". Attributes (PluginFields; see attentionPlugin.yaml):
 *   scale     FLOAT32[1], > 0   (O = softmax((Q * scale) K^T) V)
 *   layout    INT32[1], 0 = separate (default), 1 = packed
 *   num_heads INT32[1], required for layout 1; for layout 0 it must match dim 1 if given
 * layout 0: inputs Q, K, V [B, H, N, hd] (or rank 3 [B*H, N, hd]); output O of Q's shape.
 * layout 1: input QKV [B, N, 3*H*hd] (the QKV linear output, 3 x heads x hd innermost);
 *           output O [B, N, H*hd] (heads x hd innermost).
 * FP32 or FP16 (all tensors one type), linear format. 1 <= N <= 1024, 16 <= hd <= 64.
 */
#pragma once

#include "NvInferRuntime.h"

#include <string>
#include <vector>

namespace mvt::plugin
{
constexpr char const* kAttentionName = "MobileViTAttention";
constexpr char const* kAttentionVersion = "1";

enum class AttentionLayout : int32_t
{
    kSEPARATE = 0,
    kPACKED = 1,
};

class AttentionPlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Throws PluginError on invalid attributes.
    AttentionPlugin(std::string name, std::string nameSpace, float scale, int32_t layout, int32_t numHeads);
    AttentionPlugin(AttentionPlugin const&) = default;
    AttentionPlugin& operator=(AttentionPlugin const&) = delete;
    ~AttentionPlugin() override = default;

    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

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

    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    struct Shape
    {
        int32_t batch;
        int32_t heads;
        int32_t seqLen;
        int32_t headDim;
    };
    int32_t expectedInputs() const;
    //! Throws PluginError for an unsupported shape; -1 entries pass when allowUnknown.
    Shape checkShape(nvinfer1::Dims const& dims, bool allowUnknown) const;

    std::string mName;
    std::string mNamespace;
    float mScale;
    int32_t mLayout;
    int32_t mNumHeads;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialFc{};
};

class AttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    AttentionPluginCreator();
    ~AttentionPluginCreator() override = default;

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
