// anvil._anvil: the nanobind module under the anvil Python package. It binds the public C++ structs
// (EngineConfig, SamplingParams, RequestOutput, EngineStats, ModelInfo) and the two wrappers (SyncEngine for
// anvil.LLM, AsyncWrapper for anvil.AsyncLLM); the user-facing classes are in python/anvil/. Status errors become
// ValueError (bad arguments), FileNotFoundError (missing files) or RuntimeError; the GIL is released around
// every call that loads or runs the model.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include "anvil/async_engine.h"
#include "anvil/engine.h"
#include "async_wrapper.h"
#include "core/build_info.h"
#include "core/logging.h"
#include "engine_wrapper.h"
#include "support.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace anvil::python {
namespace {

PyObject* exception_type(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kUnsupported:
      return PyExc_ValueError;
    case StatusCode::kNotFound:
      return PyExc_FileNotFoundError;
    default:
      return PyExc_RuntimeError;
  }
}

SpecialToken special_token(const std::string& which) {
  if (which == "bos") return SpecialToken::kBos;
  if (which == "eos") return SpecialToken::kEos;
  throw StatusError(invalid_argument("special token must be 'bos' or 'eos' (got '" + which + "')"));
}

using Messages = std::vector<std::pair<std::string, std::string>>;

void bind_structs(nb::module_& m) {
  nb::class_<EngineConfig>(m, "EngineConfig", "anvil::EngineConfig (include/anvil/engine.h).")
      .def(nb::init<>())
      .def_rw("model_path", &EngineConfig::model_path)
      .def_rw("tokenizer_path", &EngineConfig::tokenizer_path)
      .def_rw("load_format", &EngineConfig::load_format)
      .def_rw("dummy_dtype", &EngineConfig::dummy_dtype)
      .def_rw("check_weights", &EngineConfig::check_weights)
      .def_rw("device", &EngineConfig::device)
      .def_rw("cuda_dtype", &EngineConfig::cuda_dtype)
      .def_rw("gpu_memory_utilization", &EngineConfig::gpu_memory_utilization)
      .def_rw("num_threads", &EngineConfig::num_threads)
      .def_rw("quant_activations", &EngineConfig::quant_activations)
      .def_rw("block_size", &EngineConfig::block_size)
      .def_rw("kv_cache_dtype", &EngineConfig::kv_cache_dtype)
      .def_rw("max_model_len", &EngineConfig::max_model_len)
      .def_rw("max_num_seqs", &EngineConfig::max_num_seqs)
      .def_rw("max_num_batched_tokens", &EngineConfig::max_num_batched_tokens)
      .def_rw("swap_space_gb", &EngineConfig::swap_space_gb)
      .def_rw("num_kv_blocks", &EngineConfig::num_kv_blocks)
      .def_rw("enable_prefix_caching", &EngineConfig::enable_prefix_caching)
      .def_rw("enforce_eager", &EngineConfig::enforce_eager)
      .def_rw("max_graph_batch", &EngineConfig::max_graph_batch)
      .def_rw("tensor_parallel_size", &EngineConfig::tensor_parallel_size)
      .def_rw("pipeline_parallel_size", &EngineConfig::pipeline_parallel_size);

  nb::class_<SamplingParams>(m, "SamplingParams", "anvil::SamplingParams (include/anvil/sampling_params.h).")
      .def(nb::init<>())
      .def_rw("temperature", &SamplingParams::temperature)
      .def_rw("top_k", &SamplingParams::top_k)
      .def_rw("top_p", &SamplingParams::top_p)
      .def_rw("min_p", &SamplingParams::min_p)
      .def_rw("repetition_penalty", &SamplingParams::repetition_penalty)
      .def_rw("presence_penalty", &SamplingParams::presence_penalty)
      .def_rw("frequency_penalty", &SamplingParams::frequency_penalty)
      .def_rw("seed", &SamplingParams::seed)
      .def_rw("max_tokens", &SamplingParams::max_tokens)
      .def_rw("stop", &SamplingParams::stop)
      .def_rw("ignore_eos", &SamplingParams::ignore_eos)
      .def_rw("logprobs", &SamplingParams::logprobs)
      .def(
          "validate", [](const SamplingParams& p) { check(validate_sampling_params(p)); },
          "Raises ValueError naming the first invalid field.");

  nb::class_<LogprobEntry>(m, "LogprobEntry")
      .def_ro("token_id", &LogprobEntry::token_id)
      .def_ro("logprob", &LogprobEntry::logprob);

  nb::class_<RequestTimings>(m, "RequestTimings")
      .def_ro("arrival_time", &RequestTimings::arrival_time)
      .def_ro("first_scheduled_time", &RequestTimings::first_scheduled_time)
      .def_ro("first_token_time", &RequestTimings::first_token_time)
      .def_ro("finish_time", &RequestTimings::finish_time);

  nb::class_<RequestOutput>(m, "RequestOutput", "News about one sample of one request from one engine step.")
      .def_ro("request_id", &RequestOutput::request_id)
      .def_ro("sample_index", &RequestOutput::sample_index)
      .def_ro("token_ids", &RequestOutput::token_ids)
      .def_prop_ro("text",
                   [](const RequestOutput& o) {
                     // NOTE: the detokenizer holds back partial UTF-8 characters; a stray invalid byte (a bad
                     // llama2.c vocabulary entry) is replaced rather than raising UnicodeDecodeError.
                     return nb::steal<nb::str>(PyUnicode_DecodeUTF8(o.text.data(), o.text.size(), "replace"));
                   })
      .def_ro("logprobs", &RequestOutput::logprobs)
      .def_ro("top_logprobs", &RequestOutput::top_logprobs)
      .def_ro("finished", &RequestOutput::finished)
      .def_prop_ro("finish_reason",
                   [](const RequestOutput& o) -> std::optional<std::string> {
                     if (!o.finish_reason.has_value()) return std::nullopt;
                     return std::string(finish_reason_name(*o.finish_reason));
                   })
      .def_ro("request_finished", &RequestOutput::request_finished)
      .def_ro("num_prompt_tokens", &RequestOutput::num_prompt_tokens)
      .def_ro("num_output_tokens", &RequestOutput::num_output_tokens)
      .def_ro("num_cached_tokens", &RequestOutput::num_cached_tokens)
      .def_ro("timings", &RequestOutput::timings);

  nb::class_<StepStats>(m, "StepStats")
      .def_ro("num_seqs", &StepStats::num_seqs)
      .def_ro("num_tokens", &StepStats::num_tokens)
      .def_ro("num_decode_seqs", &StepStats::num_decode_seqs)
      .def_ro("num_prefill_tokens", &StepStats::num_prefill_tokens)
      .def_ro("num_preempted", &StepStats::num_preempted)
      .def_ro("seconds", &StepStats::seconds);

  nb::class_<EngineStats>(m, "EngineStats", "A snapshot of the engine's state and counters.")
      .def_ro("num_running", &EngineStats::num_running)
      .def_ro("num_waiting", &EngineStats::num_waiting)
      .def_ro("num_swapped", &EngineStats::num_swapped)
      .def_ro("num_kv_blocks", &EngineStats::num_kv_blocks)
      .def_ro("num_free_kv_blocks", &EngineStats::num_free_kv_blocks)
      .def_ro("num_cached_kv_blocks", &EngineStats::num_cached_kv_blocks)
      .def_ro("kv_cache_usage", &EngineStats::kv_cache_usage)
      .def_ro("prefix_cache_queried_tokens", &EngineStats::prefix_cache_queried_tokens)
      .def_ro("prefix_cache_hit_tokens", &EngineStats::prefix_cache_hit_tokens)
      .def_ro("num_preemptions", &EngineStats::num_preemptions)
      .def_ro("num_swap_outs", &EngineStats::num_swap_outs)
      .def_ro("num_steps", &EngineStats::num_steps)
      .def_ro("num_computed_tokens", &EngineStats::num_computed_tokens)
      .def_ro("num_generated_tokens", &EngineStats::num_generated_tokens)
      .def_ro("device_seconds", &EngineStats::device_seconds)
      .def_ro("last_step", &EngineStats::last_step)
      .def("__repr__", [](const EngineStats& s) {
        return "EngineStats(num_running=" + std::to_string(s.num_running) +
               ", num_waiting=" + std::to_string(s.num_waiting) + ", num_kv_blocks=" + std::to_string(s.num_kv_blocks) +
               ", num_free_kv_blocks=" + std::to_string(s.num_free_kv_blocks) +
               ", num_steps=" + std::to_string(s.num_steps) + ")";
      });

  nb::class_<ModelInfo>(m, "ModelInfo", "What the engine loaded.")
      .def_ro("architecture", &ModelInfo::architecture)
      .def_ro("vocab_size", &ModelInfo::vocab_size)
      .def_ro("max_model_len", &ModelInfo::max_model_len)
      .def_ro("num_params", &ModelInfo::num_params)
      .def_ro("weight_bytes", &ModelInfo::weight_bytes)
      .def_ro("num_kv_blocks", &ModelInfo::num_kv_blocks)
      .def_ro("block_size", &ModelInfo::block_size)
      .def_ro("kv_cache_bytes", &ModelInfo::kv_cache_bytes)
      .def_ro("kv_cache_dtype", &ModelInfo::kv_cache_dtype);
}

void bind_sync_engine(nb::module_& m) {
  using Release = nb::call_guard<nb::gil_scoped_release>;
  nb::class_<SyncEngine>(m, "Engine", "anvil::Engine behind anvil.LLM: locked, with its own OpenMP thread count.")
      .def_static(
          "create",
          [](EngineConfig config) {
            nb::gil_scoped_release release;
            return std::make_unique<SyncEngine>(std::move(config));
          },
          "config"_a, "Loads the model (the GIL released).")
      .def_prop_ro("info", &SyncEngine::info, nb::rv_policy::copy)
      .def_prop_ro("num_threads", &SyncEngine::num_threads)
      .def("has_tokenizer", &SyncEngine::has_tokenizer)
      .def("chat_template", &SyncEngine::chat_template)
      .def(
          "special_token_text",
          [](const SyncEngine& e, const std::string& which) { return e.special_token_text(special_token(which)); },
          "which"_a)
      .def("tokenize", &SyncEngine::tokenize, "text"_a, "add_bos"_a, Release())
      .def("detokenize", &SyncEngine::detokenize, "ids"_a, Release())
      .def("add_request", &SyncEngine::add_request, "prompt_ids"_a, "params"_a, "n"_a, Release())
      .def("step", &SyncEngine::step, Release())
      .def("abort", &SyncEngine::abort, "request_id"_a, Release())
      .def("has_unfinished", &SyncEngine::has_unfinished)
      .def("stats", &SyncEngine::stats, Release())
      .def("score", &SyncEngine::score, "ids"_a, Release())
      .def("render_chat", &SyncEngine::render_chat, "messages"_a, "add_generation_prompt"_a, "chat_template"_a,
           Release())
      .def("close", &SyncEngine::close, Release())
      .def_prop_ro("is_closed", &SyncEngine::is_closed);
}

void bind_async_engine(nb::module_& m) {
  using Release = nb::call_guard<nb::gil_scoped_release>;
  nb::class_<Stream>(m, "Stream", "One request's outputs (anvil::RequestStream).")
      .def_prop_ro("id", &Stream::id)
      .def("try_next", &Stream::try_next, Release())
      .def("next", &Stream::next, "timeout_ms"_a, Release())
      .def("finished", &Stream::finished)
      .def("check_status", &Stream::check_status)
      .def("abort", &Stream::abort, Release())
      .def("close", &Stream::close, Release());

  nb::class_<AsyncWrapper>(m, "AsyncEngine", "anvil::AsyncEngine behind anvil.AsyncLLM.")
      .def_static(
          "create",
          [](EngineConfig config) {
            nb::gil_scoped_release release;
            return std::make_unique<AsyncWrapper>(std::move(config));
          },
          "config"_a, "Loads the model and starts the engine's loop thread (the GIL released).")
      .def_prop_ro("info", &AsyncWrapper::info, nb::rv_policy::copy)
      .def_prop_ro("num_threads", &AsyncWrapper::num_threads)
      .def("has_tokenizer", &AsyncWrapper::has_tokenizer)
      .def("ready_fd", &AsyncWrapper::ready_fd)
      .def("take_ready", &AsyncWrapper::take_ready)
      .def("tokenize", &AsyncWrapper::tokenize, "text"_a, "add_bos"_a, Release())
      .def("detokenize", &AsyncWrapper::detokenize, "ids"_a, Release())
      .def("submit", &AsyncWrapper::submit, "prompt_ids"_a, "params"_a, "n"_a, "key"_a, Release())
      .def("abort", &AsyncWrapper::abort, "request_id"_a, Release())
      .def("stats", &AsyncWrapper::stats, Release())
      .def("is_alive", &AsyncWrapper::is_alive)
      .def("render_chat", &AsyncWrapper::render_chat, "messages"_a, "add_generation_prompt"_a, "chat_template"_a,
           Release())
      .def("shutdown", &AsyncWrapper::shutdown, Release());
}

}  // namespace
}  // namespace anvil::python

NB_MODULE(_anvil, m) {
  using namespace anvil::python;
  m.doc() = "Anvil's native module; use the classes of the anvil package (anvil.LLM, anvil.AsyncLLM).";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const StatusError& e) {
      PyErr_SetString(exception_type(e.status().code()), e.status().message().c_str());
    }
  });
  bind_structs(m);
  bind_sync_engine(m);
  bind_async_engine(m);
  m.def("monotonic_seconds", &anvil::monotonic_seconds, "Seconds on the clock the engine stamps its timings with.");
  m.def(
      "set_log_level",
      [](const std::string& level) {
        if (level == "debug") return anvil::init_logging(anvil::LogLevel::kDebug);
        if (level == "info") return anvil::init_logging(anvil::LogLevel::kInfo);
        if (level == "warning") return anvil::init_logging(anvil::LogLevel::kWarn);
        if (level == "error") return anvil::init_logging(anvil::LogLevel::kError);
        throw StatusError(
            anvil::invalid_argument("log level must be debug, info, warning or error (got '" + level + "')"));
      },
      "level"_a, "The engine's stderr log level: debug, info, warning or error.");
  m.def("build_info", [] {
    const anvil::BuildInfo& b = anvil::build_info();
    nb::dict d;
    d["version"] = b.version;
    d["commit"] = b.commit;
    d["backends"] = b.backends;
    return d;
  });
}
