// Tests for the llama2.c tokenizer (file parsing, SentencePiece BPE encode, decode), the UTF-8 replacement
// rule, the incremental detokenizer and the stop-string checker. Uses the real tok512.bin of stories260K.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/detokenizer.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace anvil {
namespace {

const std::string kTok512Path = ANVIL_SOURCE_DIR "/../shared/models/stories260K/tok512.bin";
constexpr int32_t kTok512VocabSize = 512;
constexpr std::string_view kFffd = "\xEF\xBF\xBD";

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::unique_ptr<Tokenizer> load_tok512() {
  auto tok = load_llama2c_tokenizer(kTok512Path, kTok512VocabSize);
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

std::vector<int32_t> encode_or_die(const Tokenizer& tok, std::string_view text, bool add_bos = true) {
  auto ids = tok.encode(text, EncodeOptions{.add_bos = add_bos});
  EXPECT_TRUE(ids.ok()) << ids.status().to_string();
  return ids.ok() ? ids.value() : std::vector<int32_t>{};
}

void append_code_point(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string random_ascii(std::mt19937& rng, size_t max_len) {
  static const std::string kAlphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'\"-\n\t:;()<>[]{}#@~`^_";
  std::uniform_int_distribution<size_t> len_dist(0, max_len);
  std::uniform_int_distribution<size_t> char_dist(0, kAlphabet.size() - 1);
  std::string s;
  const size_t len = len_dist(rng);
  for (size_t i = 0; i < len; ++i) s.push_back(kAlphabet[char_dist(rng)]);
  return s;
}

// Mixes ASCII words, Latin-1, the vocab's own multi-byte pieces (€, ™), CJK and emoji.
std::string random_unicode(std::mt19937& rng, size_t max_chars) {
  std::uniform_int_distribution<size_t> len_dist(0, max_chars);
  std::uniform_int_distribution<int> kind_dist(0, 5);
  std::string s;
  const size_t len = len_dist(rng);
  for (size_t i = 0; i < len; ++i) {
    switch (kind_dist(rng)) {
      case 0: s += random_ascii(rng, 6); break;
      case 1: append_code_point(std::uniform_int_distribution<uint32_t>(0xA0, 0x17F)(rng), s); break;
      case 2: append_code_point(rng() % 2 ? 0x20AC : 0x2122, s); break;
      case 3: append_code_point(std::uniform_int_distribution<uint32_t>(0x4E00, 0x9FFF)(rng), s); break;
      case 4: append_code_point(std::uniform_int_distribution<uint32_t>(0x1F300, 0x1FAFF)(rng), s); break;
      default: s.push_back(' '); break;
    }
  }
  return s;
}

// The file bytes of a llama2.c tokenizer with the given pieces (score = -id unless given).
std::vector<uint8_t> make_tokenizer_file(const std::vector<std::string>& pieces, int32_t max_token_length,
                                         const std::vector<float>& scores = {}) {
  std::vector<uint8_t> out;
  auto put = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  put(&max_token_length, 4);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const float score = scores.empty() ? -static_cast<float>(i) : scores[i];
    const auto len = static_cast<int32_t>(pieces[i].size());
    put(&score, 4);
    put(&len, 4);
    put(pieces[i].data(), pieces[i].size());
  }
  return out;
}

// unk, bos, eos, then the 256 byte pieces: the head of every SentencePiece vocab with byte fallback.
std::vector<std::string> sentencepiece_head() {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    pieces.emplace_back(buf);
  }
  return pieces;
}

std::unique_ptr<Llama2cTokenizer> parse_or_die(const std::vector<std::string>& pieces,
                                               const std::vector<float>& scores = {}) {
  const std::vector<uint8_t> bytes = make_tokenizer_file(pieces, 64, scores);
  auto tok = parse_llama2c_tokenizer(bytes.data(), bytes.size(), static_cast<int32_t>(pieces.size()), "synthetic");
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("anvil_test_tokenizer_" + std::to_string(std::random_device{}()) + "_" +
             std::to_string(reinterpret_cast<uintptr_t>(this)));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = (path_ / name).string();
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

 private:
  std::filesystem::path path_;
};

// llama2.c's encode, written the plain O(n^2) way over piece strings, as a reference for the fast encoder.
// `pieces`/`scores` are tok512's; byte-fallback ids are 3 + byte and never merge.
std::vector<int32_t> reference_encode(const std::vector<std::string>& pieces, const std::vector<float>& scores,
                                      const std::string& text) {
  std::map<std::string, int32_t> ids;
  for (int32_t id = 259; id < static_cast<int32_t>(pieces.size()); ++id) ids.emplace(pieces[id], id);
  struct Sym {
    std::string text;
    int32_t id;
    bool is_mergeable;
  };
  if (text.empty()) return {1};
  std::vector<Sym> syms;
  const std::string work = " " + text;
  size_t pos = 0;
  while (pos < work.size()) {
    const Utf8Sequence seq = classify_utf8(work, pos);
    const size_t n = seq.kind == Utf8Kind::kComplete ? seq.length : 1;
    const std::string ch = work.substr(pos, n);
    if (auto it = ids.find(ch); it != ids.end()) {
      syms.push_back({ch, it->second, true});
    } else {
      for (const char c : ch) syms.push_back({std::string(1, c), 3 + static_cast<uint8_t>(c), false});
    }
    pos += n;
  }
  while (true) {
    float best_score = -std::numeric_limits<float>::infinity();
    int best_idx = -1;
    int32_t best_id = -1;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      if (!syms[i].is_mergeable || !syms[i + 1].is_mergeable) continue;
      auto it = ids.find(syms[i].text + syms[i + 1].text);
      if (it != ids.end() && (best_idx < 0 || scores[it->second] > best_score)) {
        best_score = scores[it->second];
        best_idx = static_cast<int>(i);
        best_id = it->second;
      }
    }
    if (best_idx < 0) break;
    syms[best_idx].text += syms[best_idx + 1].text;
    syms[best_idx].id = best_id;
    syms.erase(syms.begin() + best_idx + 1);
  }
  std::vector<int32_t> out = {1};
  for (const Sym& s : syms) out.push_back(s.id);
  return out;
}

// ---- encode / decode with tok512.bin ---------------------------------------------------------------------

TEST(TokenizerLlama2c, LoadsTok512) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->strips_leading_space());
  EXPECT_EQ(tok->token_bytes(0), "");
  EXPECT_EQ(tok->token_bytes(1), "");  // stored as "\n<s>\n" in tok512.bin
  EXPECT_EQ(tok->token_bytes(2), "");
  EXPECT_EQ(tok->token_bytes(3), std::string(1, '\0'));
  EXPECT_EQ(tok->token_bytes(13), "\n");      // <0x0A>
  EXPECT_EQ(tok->token_bytes(258), "\xFF");   // <0xFF>
  EXPECT_EQ(tok->token_bytes(403), " Once");  // word-start marker stored as a space
  EXPECT_EQ(tok->token_bytes(503), "\xE2\x82\xAC");
  EXPECT_EQ(tok->token_bytes(-1), "");
  EXPECT_EQ(tok->token_bytes(512), "");
  EXPECT_TRUE(static_cast<Llama2cTokenizer&>(*tok).has_full_byte_fallback());
}

TEST(TokenizerLlama2c, KnownEncoding) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(encode_or_die(*tok, "Once upon a time"), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(encode_or_die(*tok, "Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  EXPECT_EQ(tok->decode(ids), "Once upon a time");
}

TEST(TokenizerLlama2c, EmptyText) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(encode_or_die(*tok, ""), (std::vector<int32_t>{1}));
  EXPECT_TRUE(encode_or_die(*tok, "", false).empty());
  EXPECT_EQ(tok->decode(std::vector<int32_t>{1}), "");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{}), "");
}

// The dummy prefix space is added by encode and dropped by decode, so leading spaces in the text survive:
// " x" encodes as "  x" and decodes back to " x".
TEST(TokenizerLlama2c, LeadingSpacesRoundTrip) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  for (const std::string text : {" x", "  two", "   ", " ", "\n start", "x "}) {
    const std::vector<int32_t> ids = encode_or_die(*tok, text);
    EXPECT_EQ(tok->decode(ids), text) << "text '" << text << "'";
    std::string bytes;
    for (const int32_t id : ids) bytes += tok->token_bytes(id);
    EXPECT_EQ(bytes, " " + text);
  }
  // Without BOS the rule is the same: the first non-empty piece loses one space.
  EXPECT_EQ(tok->decode(encode_or_die(*tok, " x", false)), " x");
  // Mid-sequence decoding (no dummy prefix involved) still drops the first piece's space.
  EXPECT_EQ(tok->decode(std::vector<int32_t>{407, 261}), "upon a");
}

TEST(TokenizerLlama2c, RandomAsciiRoundTrip) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 300; ++iter) {
    const std::string text = random_ascii(rng, 120);
    const std::vector<int32_t> ids = encode_or_die(*tok, text);
    ASSERT_EQ(tok->decode(ids), text) << "iteration " << iter;
    for (size_t i = 1; i < ids.size(); ++i) {
      ASSERT_GE(ids[i], 3);
      ASSERT_LT(ids[i], 512);
    }
  }
}

TEST(TokenizerLlama2c, RandomUnicodeRoundTrip) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(99);
  for (int iter = 0; iter < 300; ++iter) {
    const std::string text = random_unicode(rng, 30);
    ASSERT_EQ(to_valid_utf8(text), text);
    ASSERT_EQ(tok->decode(encode_or_die(*tok, text)), text) << "iteration " << iter;
  }
}

TEST(TokenizerLlama2c, MatchesReferenceMergeOrder) {
  const std::vector<uint8_t> file = read_file_bytes(kTok512Path);
  ASSERT_GT(file.size(), 4u);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  size_t off = 4;
  for (int i = 0; i < kTok512VocabSize; ++i) {
    float score;
    int32_t len;
    std::memcpy(&score, file.data() + off, 4);
    std::memcpy(&len, file.data() + off + 4, 4);
    pieces.emplace_back(reinterpret_cast<const char*>(file.data() + off + 8), static_cast<size_t>(len));
    scores.push_back(score);
    off += 8 + static_cast<size_t>(len);
  }
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(7);
  for (int iter = 0; iter < 200; ++iter) {
    const std::string text = iter % 2 ? random_ascii(rng, 80) : random_unicode(rng, 15);
    ASSERT_EQ(encode_or_die(*tok, text), reference_encode(pieces, scores, text)) << "text '" << text << "'";
  }
}

TEST(TokenizerLlama2c, LongTextRoundTrip) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(5);
  std::string text;
  while (text.size() < 100 * 1024) text += random_ascii(rng, 200) + random_unicode(rng, 10);
  const std::vector<int32_t> ids = encode_or_die(*tok, text);
  EXPECT_LT(ids.size(), text.size());
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(TokenizerLlama2c, ByteFallbackForCharactersNotInVocab) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  const std::string text = "日本";  // E6 97 A5 E6 9C AC
  const std::vector<int32_t> ids = encode_or_die(*tok, text);
  const std::vector<int32_t> expected = {1, 410, 3 + 0xE6, 3 + 0x97, 3 + 0xA5, 3 + 0xE6, 3 + 0x9C, 3 + 0xAC};
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tok->decode(ids), text);
  // A character that is a piece of its own is not split into bytes: "€" is id 503.
  EXPECT_EQ(encode_or_die(*tok, "€", false), (std::vector<int32_t>{410, 503}));
}

TEST(TokenizerLlama2c, InvalidUtf8InputGoesToByteFallback) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  const std::string text = "a\xE6\x97" "b\x80\xFF z\xF0\x9F\x98";
  const std::vector<int32_t> ids = encode_or_die(*tok, text);
  std::string bytes;
  for (const int32_t id : ids) bytes += tok->token_bytes(id);
  EXPECT_EQ(bytes, " " + text);
  EXPECT_EQ(tok->decode(ids), "a" + std::string(kFffd) + "b" + std::string(kFffd) + std::string(kFffd) + " z" +
                                  std::string(kFffd));
  EXPECT_EQ(tok->decode(ids), to_valid_utf8(text));
}

// ---- synthetic vocabularies ------------------------------------------------------------------------------

TEST(TokenizerLlama2c, WordStartMarkerBecomesSpace) {
  std::vector<std::string> pieces = sentencepiece_head();
  const auto first = static_cast<int32_t>(pieces.size());
  for (const char* p : {"\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a", "ab", "\xE2\x96\x81" "ab"}) pieces.push_back(p);
  std::vector<float> scores(pieces.size(), 0.0f);
  scores[first + 3] = -1.0f;  // ▁a
  scores[first + 4] = -2.0f;  // ab
  scores[first + 5] = -3.0f;  // ▁ab
  auto tok = parse_or_die(pieces, scores);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->token_bytes(first), " ");
  EXPECT_EQ(tok->token_bytes(first + 5), " ab");
  EXPECT_EQ(encode_or_die(*tok, "ab"), (std::vector<int32_t>{1, first + 5}));
  EXPECT_EQ(encode_or_die(*tok, "ba", false), (std::vector<int32_t>{first, first + 2, first + 1}));
  EXPECT_EQ(tok->decode(encode_or_die(*tok, "ab ab")), "ab ab");
  // Text that spells a special or byte piece is plain text, never that token.
  EXPECT_EQ(tok->decode(encode_or_die(*tok, "<s><0x41>")), "<s><0x41>");
  for (const int32_t id : encode_or_die(*tok, "<s>", false)) EXPECT_NE(id, 1);
}

TEST(TokenizerLlama2c, MergeTiesGoLeftmostAndHigherScoreWins) {
  std::vector<std::string> pieces = sentencepiece_head();
  const auto first = static_cast<int32_t>(pieces.size());
  for (const char* p : {" ", "a", "b", "c", "ab", "bc"}) pieces.push_back(p);
  std::vector<float> equal(pieces.size(), 0.0f);
  auto tok = parse_or_die(pieces, equal);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(encode_or_die(*tok, "abc", false), (std::vector<int32_t>{first, first + 4, first + 3}));
  std::vector<float> bc_better = equal;
  bc_better[first + 5] = 1.0f;
  tok = parse_or_die(pieces, bc_better);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(encode_or_die(*tok, "abc", false), (std::vector<int32_t>{first, first + 1, first + 5}));
}

TEST(TokenizerLlama2c, MissingBytePieceGivesUnk) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", " ", "a"};
  auto tok = parse_or_die(pieces);
  ASSERT_NE(tok, nullptr);
  EXPECT_FALSE(tok->has_full_byte_fallback());
  EXPECT_EQ(encode_or_die(*tok, "a\xC3\xA9", false), (std::vector<int32_t>{3, 4, 0, 0}));
}

// ---- corrupt files ---------------------------------------------------------------------------------------

TEST(TokenizerFile, MissingFileIsNotFound) {
  auto tok = load_llama2c_tokenizer("/nonexistent/dir/tok.bin", 512);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("/nonexistent/dir/tok.bin"), std::string::npos);
}

TEST(TokenizerFile, DirectoryIsRejected) {
  auto tok = load_llama2c_tokenizer(std::filesystem::temp_directory_path().string(), 512);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kInvalidFile);
}

TEST(TokenizerFile, TruncatedAnywhereGivesErrorNamingFileAndOffset) {
  const std::vector<uint8_t> full = read_file_bytes(kTok512Path);
  ASSERT_EQ(full.size(), 6227u);
  TempDir dir;
  std::mt19937 rng(3);
  std::vector<size_t> cuts = {0, 1, 3, 4, 5, 11, 12, full.size() - 1};
  for (int i = 0; i < 20; ++i) cuts.push_back(std::uniform_int_distribution<size_t>(0, full.size() - 1)(rng));
  for (const size_t cut : cuts) {
    const std::string path =
        dir.write("cut.bin", std::vector<uint8_t>(full.begin(), full.begin() + static_cast<ptrdiff_t>(cut)));
    auto tok = load_llama2c_tokenizer(path, kTok512VocabSize);
    ASSERT_FALSE(tok.ok()) << "cut at " << cut;
    EXPECT_EQ(tok.status().code(), StatusCode::kInvalidFile);
    const std::string& msg = tok.status().message();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated at byte"), std::string::npos) << msg;
  }
}

TEST(TokenizerFile, TruncatedMessageNamesRecordAndOffset) {
  const std::vector<uint8_t> full = read_file_bytes(kTok512Path);
  auto tok = parse_llama2c_tokenizer(full.data(), 12 + 3, kTok512VocabSize, "t.bin");
  ASSERT_FALSE(tok.ok());
  // Record 0 is "<unk>": header at byte 4, piece bytes from byte 12, only 3 of 5 present.
  EXPECT_EQ(tok.status().message(),
            "tokenizer file t.bin: truncated at byte 12 (token 0 of 512 needs 5 piece bytes, 3 are left)");
}

TEST(TokenizerFile, TooFewRecordsForVocabSize) {
  const std::vector<uint8_t> full = read_file_bytes(kTok512Path);
  TempDir dir;
  const std::string path = dir.write("tok.bin", full);
  auto tok = load_llama2c_tokenizer(path, 600);
  ASSERT_FALSE(tok.ok());
  const std::string& msg = tok.status().message();
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated at byte 6227"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token 512 of 600"), std::string::npos) << msg;
}

TEST(TokenizerFile, TrailingBytesMeanVocabSizeMismatch) {
  const std::vector<uint8_t> full = read_file_bytes(kTok512Path);
  auto tok = parse_llama2c_tokenizer(full.data(), full.size(), 500, "t.bin");
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("trailing bytes"), std::string::npos) << tok.status().message();
  EXPECT_NE(tok.status().message().find("t.bin"), std::string::npos);
}

TEST(TokenizerFile, BadLengthsAndScores) {
  const std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "abc"};
  struct Case {
    const char* name;
    size_t patch_offset;  // where a 4-byte value is overwritten
    uint32_t value;
    const char* expected;  // substring of the message
  };
  // Layout: max_token_length @0; records at 4 (<unk>, 5 bytes), 17 (<s>, 3), 28 (</s>, 4), 40 (abc, 3).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  uint32_t nan_bits;
  std::memcpy(&nan_bits, &nan, 4);
  const Case cases[] = {
      {"negative max_token_length", 0, static_cast<uint32_t>(-1), "max_token_length -1 at byte 0 is negative"},
      {"negative length", 44, static_cast<uint32_t>(-5), "token 3 of 4 at byte 40: length -5 is negative"},
      {"length over max", 32, 9, "token 2 of 4 at byte 28: length 9 exceeds max_token_length 8"},
      {"huge length", 44, 0x7FFFFFFF, "token 3 of 4 at byte 40: length 2147483647 exceeds max_token_length 8"},
      {"NaN score", 17, nan_bits, "token 1 of 4 at byte 17: score is NaN"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bytes = make_tokenizer_file(pieces, 8);
    ASSERT_EQ(bytes.size(), 51u);
    std::memcpy(bytes.data() + c.patch_offset, &c.value, 4);
    auto tok = parse_llama2c_tokenizer(bytes.data(), bytes.size(), 4, "bad.bin");
    ASSERT_FALSE(tok.ok()) << c.name;
    EXPECT_EQ(tok.status().code(), StatusCode::kInvalidFile) << c.name;
    EXPECT_NE(tok.status().message().find("tokenizer file bad.bin: "), std::string::npos) << c.name;
    EXPECT_NE(tok.status().message().find(c.expected), std::string::npos) << c.name << ": " << tok.status().message();
  }
  // A huge max_token_length with an honest length is fine; the length is checked against the bytes left.
  std::vector<uint8_t> ok_bytes = make_tokenizer_file(pieces, 0x7FFFFFFF);
  EXPECT_TRUE(parse_llama2c_tokenizer(ok_bytes.data(), ok_bytes.size(), 4, "ok.bin").ok());
}

TEST(TokenizerFile, VocabSizeTooSmallOrHuge) {
  const std::vector<uint8_t> full = read_file_bytes(kTok512Path);
  auto small = parse_llama2c_tokenizer(full.data(), full.size(), 2, "t.bin");
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), StatusCode::kInvalidArgument);
  auto huge = parse_llama2c_tokenizer(full.data(), full.size(), std::numeric_limits<int32_t>::max(), "t.bin");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("truncated at byte 6227"), std::string::npos) << huge.status().message();
}

// ---- UTF-8 replacement rule ------------------------------------------------------------------------------

TEST(TokenizerUtf8, ReplacementMatchesPythonErrorsReplace) {
  const std::string f(kFffd);
  // Expected values are Python's bytes.decode("utf-8", errors="replace").
  const std::pair<std::string, std::string> cases[] = {
      {"plain", "plain"},
      {"\xE6\x97\xA5", "\xE6\x97\xA5"},
      {"\xF0\x80\x80", f + f + f},
      {"\xE6\x97", f},
      {"\xED\xA0\x80", f + f + f},
      {"\xC0\xAF", f + f},
      {"\xF4\x90\x80\x80", f + f + f + f},
      {"\xE6\x97" "a", f + "a"},
      {"a\x80" "b", "a" + f + "b"},
      {"\xF0\x9F\x98", f},
      {"\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80"},
  };
  for (const auto& [in, expected] : cases) EXPECT_EQ(to_valid_utf8(in), expected);
}

TEST(TokenizerUtf8, HoldKeepsOnlyAnIncompleteTail) {
  std::string out;
  EXPECT_EQ(append_valid_utf8("ab\xE6\x97", Utf8Tail::kHold, out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(append_valid_utf8("\xE6\x97" "a", Utf8Tail::kHold, out), 3u);
  EXPECT_EQ(out, std::string(kFffd) + "a");
}

// ---- incremental detokenizer -----------------------------------------------------------------------------

// True when `s` is valid UTF-8 that does not end inside a character.
bool is_complete_utf8(const std::string& s) {
  std::string out;
  return append_valid_utf8(s, Utf8Tail::kHold, out) == s.size() && out == s;
}

TEST(TokenizerDetokenizer, StreamEqualsDecodeForRandomIds) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> any_id(0, 511);
  std::uniform_int_distribution<int32_t> high_byte_id(3 + 0x80, 3 + 0xFF);
  std::uniform_int_distribution<int> len_dist(0, 60);
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<int32_t> ids;
    const int len = len_dist(rng);
    for (int i = 0; i < len; ++i) ids.push_back(rng() % 3 == 0 ? high_byte_id(rng) : any_id(rng));
    IncrementalDetokenizer detok(*tok);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string out = detok.push(id);
      ASSERT_TRUE(is_complete_utf8(out)) << "iteration " << iter;
      streamed += out;
    }
    const std::string tail = detok.flush();
    ASSERT_TRUE(is_complete_utf8(tail));
    streamed += tail;
    ASSERT_EQ(streamed, tok->decode(ids)) << "iteration " << iter;
  }
}

TEST(TokenizerDetokenizer, StreamsEncodedTextBackExactly) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(8);
  for (int iter = 0; iter < 200; ++iter) {
    const std::string text = random_unicode(rng, 20);
    IncrementalDetokenizer detok(*tok);
    std::string streamed;
    for (const int32_t id : encode_or_die(*tok, text)) {
      const std::string out = detok.push(id);
      ASSERT_TRUE(is_complete_utf8(out));
      streamed += out;
    }
    EXPECT_EQ(detok.flush(), "");
    ASSERT_EQ(streamed, text);
  }
}

TEST(TokenizerDetokenizer, MultiByteCharacterIsNeverEmittedHalf) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  // "日" = E6 97 A5 and "😀" = F0 9F 98 80, as byte tokens after "Once".
  const std::vector<int32_t> ids = {1, 403, 3 + 0xE6, 3 + 0x97, 3 + 0xA5, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80};
  const std::vector<std::string> expected = {"", "Once", "", "", "日", "", "", "", "😀"};
  IncrementalDetokenizer detok(*tok);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(detok.push(ids[i]), expected[i]) << "token " << i;
  EXPECT_EQ(detok.flush(), "");
}

TEST(TokenizerDetokenizer, InvalidBytesAreReplacedNotHeld) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.push(3 + 0x80), kFffd);  // lone continuation byte: out at once
  EXPECT_EQ(detok.push(3 + 0xE6), "");     // a lead byte may still complete
  EXPECT_EQ(detok.push(412), std::string(kFffd) + "a");  // ... but "a" cannot continue it
  EXPECT_EQ(detok.push(3 + 0xF0), "");
  EXPECT_EQ(detok.push(3 + 0x9F), "");
  EXPECT_EQ(detok.flush(), kFffd);  // the stream ended inside a character
}

// A completion continues its prompt's text: the first piece keeps its SentencePiece space ("Once" + " upon"), as
// vLLM streams it; the engine starts such a stream for every prompt with a token other than BOS.
TEST(TokenizerDetokenizer, ContinuationKeepsTheFirstLeadingSpace) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  IncrementalDetokenizer detok(*tok, /*continues_text=*/true);
  EXPECT_EQ(detok.push(407), " upon");
  EXPECT_EQ(detok.push(261), " a");
  IncrementalDetokenizer fresh(*tok);
  EXPECT_EQ(fresh.push(407), "upon");
}

TEST(TokenizerDetokenizer, LeadingSpaceDroppedOnceAfterSpecials) {
  auto tok = load_tok512();
  ASSERT_NE(tok, nullptr);
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.push(1), "");
  EXPECT_EQ(detok.push(0), "");
  EXPECT_EQ(detok.push(403), "Once");
  EXPECT_EQ(detok.push(407), " upon");
  EXPECT_EQ(detok.push(2), "");
  EXPECT_EQ(detok.push(261), " a");
}

// ---- stop strings ----------------------------------------------------------------------------------------

struct StopCase {
  const char* name;
  std::vector<std::string> stops;
  std::vector<std::string> feeds;
  std::vector<std::string> expected_outputs;  // one per feed
  bool is_stopped;
  std::string matched;
  std::string expected_flush;
};

TEST(TokenizerStop, Table) {
  const StopCase cases[] = {
      {"no stop strings", {}, {"hello", " world"}, {"hello", " world"}, false, "", ""},
      {"no match", {"STOP"}, {"hello", " world"}, {"hello", " world"}, false, "", ""},
      {"match inside one feed", {"STOP"}, {"abcSTOPdef", "more"}, {"abc", ""}, true, "STOP", ""},
      {"split across feeds", {"STOP"}, {"ab S", "T", "OP x"}, {"ab ", "", ""}, true, "STOP", ""},
      {"held prefix released", {"STOP"}, {"ab ST", "ay"}, {"ab ", "STay"}, false, "", ""},
      {"held prefix flushed at end", {"STOP"}, {"ab STO"}, {"ab "}, false, "", "STO"},
      {"earliest of two stops", {"world", "lo w"}, {"hello world"}, {"hel"}, true, "lo w", ""},
      {"second stop completes first", {"abcdef", "cd"}, {"xab", "cd"}, {"x", "ab"}, true, "cd", ""},
      {"longest held prefix", {"aab", "ab"}, {"xaa", "c"}, {"x", "aac"}, false, "", ""},
      {"empty stop ignored", {"", "Z"}, {"abc"}, {"abc"}, false, "", ""},
      {"stop at start", {"\n\n"}, {"\n", "\nrest"}, {"", ""}, true, "\n\n", ""},
      {"multi-byte stop", {"日本"}, {"x日", "本y"}, {"x", ""}, true, "日本", ""},
  };
  for (const StopCase& c : cases) {
    StopChecker checker(c.stops);
    ASSERT_EQ(c.feeds.size(), c.expected_outputs.size()) << c.name;
    for (size_t i = 0; i < c.feeds.size(); ++i) {
      EXPECT_EQ(checker.feed(c.feeds[i]), c.expected_outputs[i]) << c.name << ", feed " << i;
    }
    EXPECT_EQ(checker.stopped(), c.is_stopped) << c.name;
    EXPECT_EQ(checker.matched().value_or(""), c.matched) << c.name;
    EXPECT_EQ(checker.flush(), c.expected_flush) << c.name;
  }
}

// Feeding text in random pieces emits exactly the text before the first stop (or all text when none).
TEST(TokenizerStop, RandomSplitsAgreeWithWholeTextSearch) {
  std::mt19937 rng(11);
  const std::vector<std::string> stops = {"abc", "ba", "cc"};
  for (int iter = 0; iter < 500; ++iter) {
    std::string text;
    const int len = static_cast<int>(rng() % 30);
    for (int i = 0; i < len; ++i) text.push_back("abcd"[rng() % 4]);
    size_t first = std::string::npos;
    for (const std::string& s : stops) first = std::min(first, text.find(s));
    StopChecker checker(stops);
    std::string emitted;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t n = 1 + rng() % 4;
      emitted += checker.feed(text.substr(pos, n));
      pos += n;
    }
    if (!checker.stopped()) emitted += checker.flush();
    EXPECT_EQ(checker.stopped(), first != std::string::npos) << text;
    EXPECT_EQ(emitted, text.substr(0, first)) << text;
  }
}

}  // namespace
}  // namespace anvil
