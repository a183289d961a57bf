// GPT-2's byte-level alphabet: every byte 0..255 has a printable stand-in character (the printable bytes as
// themselves, the others from U+0100 on, in byte order). Byte-level BPE vocabularies are written in it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace anvil {

// The stand-in code point of `byte`.
char32_t byte_level_char(uint8_t byte);
// The byte a stand-in code point stands for, if it is one.
std::optional<uint8_t> byte_level_byte(char32_t cp);
// Appends the byte-level spelling of `bytes` to `out` (one stand-in character per byte).
void append_byte_level(std::string_view bytes, std::string& out);
// HF's ByteLevel decoder on one token: its bytes when every character is a stand-in, else the token as is.
std::string byte_level_decode_token(std::string_view token);

}  // namespace anvil
