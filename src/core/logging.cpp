// Process-wide logger setup.
#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace anvil {

void init_logging(LogLevel level) {
  auto logger = spdlog::stderr_color_mt("anvil");
  logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
  switch (level) {
    case LogLevel::kDebug: spdlog::set_level(spdlog::level::debug); break;
    case LogLevel::kInfo: spdlog::set_level(spdlog::level::info); break;
    case LogLevel::kWarn: spdlog::set_level(spdlog::level::warn); break;
    case LogLevel::kError: spdlog::set_level(spdlog::level::err); break;
  }
}

}  // namespace anvil
