// Binds the positional and keyword arguments of a filter, test, method or global call to its parameter
// names, the way Python does, and reads them as typed values with clear errors ("filter 'join': ...").
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja_builtins.h"

namespace anvil::jinja {

class Params {
 public:
  // `what` names the callee in errors. Fails on extra positional arguments and unknown or repeated keywords.
  Params(std::string what, const CallArgs& call, std::initializer_list<std::string_view> names)
      : what_(std::move(what)), names_(names), values_(names.size()), given_(names.size(), false) {
    if (call.args.size() > names_.size()) {
      fail(what_ + " takes at most " + std::to_string(names_.size()) + " argument(s), got " +
           std::to_string(call.args.size()));
    }
    for (size_t i = 0; i < call.args.size(); ++i) {
      values_[i] = call.args[i];
      given_[i] = true;
    }
    for (const auto& [key, value] : call.kwargs) {
      size_t i = 0;
      while (i < names_.size() && names_[i] != key) ++i;
      if (i == names_.size()) fail(what_ + " got an unexpected keyword argument '" + key + "'");
      if (given_[i]) fail(what_ + " got multiple values for argument '" + key + "'");
      values_[i] = value;
      given_[i] = true;
    }
  }

  bool given(size_t i) const { return given_[i]; }
  // The argument, or undefined when it was not given.
  const Value& get(size_t i) const { return values_[i]; }

  std::string string(size_t i) const {
    if (!given_[i]) fail(what_ + " missing argument '" + std::string(names_[i]) + "'");
    if (!values_[i].is_string()) {
      fail(what_ + " argument '" + std::string(names_[i]) + "' must be a string, not " + type_name(values_[i]));
    }
    return values_[i].as_string();
  }

  int64_t integer(size_t i) const {
    if (!given_[i]) fail(what_ + " missing argument '" + std::string(names_[i]) + "'");
    if (!values_[i].is_integral()) {
      fail(what_ + " argument '" + std::string(names_[i]) + "' must be an integer, not " + type_name(values_[i]));
    }
    return values_[i].as_int();
  }

 private:
  std::string what_;
  std::vector<std::string_view> names_;
  std::vector<Value> values_;
  std::vector<bool> given_;
};

}  // namespace anvil::jinja
