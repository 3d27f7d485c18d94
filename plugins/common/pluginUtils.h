/*
 * Helpers for the TensorRT wrappers: a logger fed by setLoggerFinder(), a throwing validation
 * macro for creators and constructors, and PluginField readers that COPY attribute data into
 * plugin-owned containers (TensorRT's field memory is only valid during createPlugin()).
 *
 * noexcept plugin methods catch everything these throw and report it through logError();
 * nothing here aborts the process.
 */
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace mvt::plugin
{
//! Invalid attribute, shape or type: the message names what is wrong and what is supported.
class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log through TensorRT's logger when one was provided, else to stderr.
void logError(std::string const& message) noexcept;
void logWarning(std::string const& message) noexcept;

//! Log an exception caught in a noexcept method, prefixed with the plugin and method names.
void reportException(char const* where, std::exception const& e) noexcept;

[[noreturn]] void throwPluginError(char const* file, int32_t line, std::string const& message);

nvinfer1::PluginField const* findField(nvinfer1::PluginFieldCollection const* fc, char const* name);
float readFloat(nvinfer1::PluginField const& field);
int32_t readInt(nvinfer1::PluginField const& field);
std::vector<float> readFloats(nvinfer1::PluginField const& field);

//! "[a, b, c]" for log messages.
std::string dimsToString(nvinfer1::Dims const& dims);
} // namespace mvt::plugin

#define MVT_PLUGIN_VALIDATE(cond, msg)                                                                                \
    do                                                                                                                \
    {                                                                                                                 \
        if (!(cond))                                                                                                  \
        {                                                                                                             \
            std::ostringstream mvtMsg_;                                                                               \
            mvtMsg_ << msg;                                                                                           \
            ::mvt::plugin::throwPluginError(__FILE__, __LINE__, mvtMsg_.str());                                       \
        }                                                                                                             \
    } while (0)
