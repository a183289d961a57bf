// Logging: spdlog to stderr, one logger for the whole process. Progress and diagnostics go here,
// never to stdout (stdout carries generated text and JSON).
#pragma once

#include <spdlog/spdlog.h>

namespace anvil {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Sends the default logger to stderr at `level`; call once at program start.
void init_logging(LogLevel level);

}  // namespace anvil

#define ANVIL_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define ANVIL_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define ANVIL_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define ANVIL_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
