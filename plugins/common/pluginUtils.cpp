#include "common/pluginUtils.h"

#include <atomic>
#include <cstring>
#include <iostream>

namespace mvt::plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        std::string const text = "[mobilevit_plugins] " + message;
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else
        {
            std::cerr << text << std::endl;
        }
    }
    catch (...)
    {
        // Logging must never throw out of a noexcept method.
    }
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

void logWarning(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kWARNING, message);
}

void reportException(char const* where, std::exception const& e) noexcept
{
    try
    {
        logError(std::string(where) + ": " + e.what());
    }
    catch (...)
    {
    }
}

void throwPluginError(char const* file, int32_t line, std::string const& message)
{
    char const* base = std::strrchr(file, '/');
    std::ostringstream s;
    s << message << " (" << (base != nullptr ? base + 1 : file) << ":" << line << ")";
    throw PluginError(s.str());
}

nvinfer1::PluginField const* findField(nvinfer1::PluginFieldCollection const* fc, char const* name)
{
    if (fc == nullptr)
    {
        return nullptr;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        if (f.name != nullptr && std::strcmp(f.name, name) == 0)
        {
            return &f;
        }
    }
    return nullptr;
}

float readFloat(nvinfer1::PluginField const& field)
{
    MVT_PLUGIN_VALIDATE(field.data != nullptr && field.length == 1,
        "attribute '" << field.name << "' must be one float, got length " << field.length);
    switch (field.type)
    {
    case nvinfer1::PluginFieldType::kFLOAT32: return *static_cast<float const*>(field.data);
    case nvinfer1::PluginFieldType::kFLOAT64: return static_cast<float>(*static_cast<double const*>(field.data));
    default: break;
    }
    throwPluginError(__FILE__, __LINE__, std::string("attribute '") + field.name + "' must be FLOAT32 or FLOAT64");
}

int32_t readInt(nvinfer1::PluginField const& field)
{
    MVT_PLUGIN_VALIDATE(field.data != nullptr && field.length == 1,
        "attribute '" << field.name << "' must be one integer, got length " << field.length);
    switch (field.type)
    {
    case nvinfer1::PluginFieldType::kINT32: return *static_cast<int32_t const*>(field.data);
    case nvinfer1::PluginFieldType::kINT64:
    {
        int64_t const v = *static_cast<int64_t const*>(field.data);
        MVT_PLUGIN_VALIDATE(v >= INT32_MIN && v <= INT32_MAX, "attribute '" << field.name << "' out of range");
        return static_cast<int32_t>(v);
    }
    default: break;
    }
    throwPluginError(__FILE__, __LINE__, std::string("attribute '") + field.name + "' must be INT32 or INT64");
}

std::vector<float> readFloats(nvinfer1::PluginField const& field)
{
    MVT_PLUGIN_VALIDATE(field.data != nullptr && field.length > 0,
        "attribute '" << field.name << "' must be a non-empty float array");
    std::vector<float> out(static_cast<size_t>(field.length));
    switch (field.type)
    {
    case nvinfer1::PluginFieldType::kFLOAT32:
        std::memcpy(out.data(), field.data, out.size() * sizeof(float));
        return out;
    case nvinfer1::PluginFieldType::kFLOAT64:
    {
        double const* d = static_cast<double const*>(field.data);
        for (size_t i = 0; i < out.size(); ++i)
        {
            out[i] = static_cast<float>(d[i]);
        }
        return out;
    }
    default: break;
    }
    throwPluginError(
        __FILE__, __LINE__, std::string("attribute '") + field.name + "' must be a FLOAT32 or FLOAT64 array");
}

std::string dimsToString(nvinfer1::Dims const& dims)
{
    std::ostringstream s;
    s << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        s << (i > 0 ? ", " : "") << dims.d[i];
    }
    s << "]";
    return s.str();
}
} // namespace mvt::plugin
