// UTF-8 text helpers with Python's str semantics, for the chat template renderer: strings are indexed by
// code point, whitespace is what str.isspace() says, and case mapping follows str.upper()/lower() for the
// common European scripts. Inputs are valid UTF-8; malformed bytes are still read safely, one at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::jinja {

// Decodes the code point at `pos` (pos < s.size()); stores its byte length. Never reads past the end.
uint32_t decode_code_point(std::string_view s, size_t pos, size_t* length);
void append_code_point(uint32_t cp, std::string& out);
// Python's str.isspace() for one code point.
bool is_py_space(uint32_t cp);
// len(s): the number of code points.
size_t code_point_count(std::string_view s);
// Byte offsets of each code point, plus s.size() at the end.
std::vector<size_t> code_point_offsets(std::string_view s);
// str.strip/lstrip/rstrip: `chars` none strips whitespace, else the given code points.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// Length in bytes of `s` without its trailing whitespace (Python's rstrip()).
size_t rstripped_length(std::string_view s);
// ASCII-only case mapping, for keywords and number parsing.
std::string ascii_upper(std::string_view s);
std::string ascii_lower(std::string_view s);
// str.upper()/lower()/title()/capitalize() for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (with
// ß -> SS); other scripts are left as they are, and Greek final sigma is not special-cased.
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_title(std::string_view s);
std::string py_capitalize(std::string_view s);

}  // namespace anvil::jinja
