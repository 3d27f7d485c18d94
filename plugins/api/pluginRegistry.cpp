/*
 * The one place that lists every plugin creator of this library, and TensorRT's entry points:
 *   getCreators()/getPluginCreators(): for IPluginRegistry::loadLibrary(), trtexec
 *     --dynamicPlugins, --setPluginsToSerialize and Polygraphy --plugins;
 *   setLoggerFinder(): lets the plugins log through the application's ILogger;
 *   static registration (MVT_STATIC_REGISTRATION, needs libnvinfer at link time): the creators
 *     register themselves when the library is dlopen()ed, which is what trtexec --staticPlugins,
 *     Triton's `--backend-config=tensorrt,plugins=...` and LD_PRELOAD rely on. Don't combine it
 *     with loadLibrary() in one process: the second registration of a name/version is refused.
 */
#include "NvInferRuntime.h"

#include "api/mobilevitPlugins.h"

#include "attentionPlugin/attentionPlugin.h"
#include "common/pluginUtils.h"
#include "layerNormPlugin/layerNormPlugin.h"

#include <cstdint>

namespace
{
mvt::plugin::LayerNormPluginCreator gLayerNormCreator;
mvt::plugin::AttentionPluginCreator gAttentionCreator;
nvinfer1::IPluginCreatorInterface* const gCreators[] = {&gLayerNormCreator, &gAttentionCreator};
constexpr int32_t kNbCreators = static_cast<int32_t>(sizeof(gCreators) / sizeof(gCreators[0]));

#if defined(MVT_STATIC_REGISTRATION)
struct StaticRegistration
{
    StaticRegistration()
    {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr)
        {
            return;
        }
        for (nvinfer1::IPluginCreatorInterface* creator : gCreators)
        {
            if (!registry->registerCreator(*creator, ""))
            {
                mvt::plugin::logWarning("could not register a creator (already registered?)");
            }
        }
    }
};
StaticRegistration const gStaticRegistration;
#endif
} // namespace

extern "C"
{
    MVT_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
    {
        nbCreators = kNbCreators;
        return gCreators;
    }

    // Older name of getCreators(), still looked up by TensorRT's loadLibrary().
    MVT_API nvinfer1::IPluginCreatorInterface* const* getPluginCreators(int32_t& nbCreators)
    {
        return getCreators(nbCreators);
    }

    MVT_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
    {
        mvt::plugin::setLoggerFinder(finder);
    }
} // extern "C"
