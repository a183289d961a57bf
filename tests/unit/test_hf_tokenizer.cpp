// Hugging Face tokenizer.json agreement: for every family fixture in tests/data/tokenizers (made by
// tools/make_tokenizer_fixtures.py with the PyPI `tokenizers` package), the ids on the whole corpus, the decoded
// text (with and without special tokens), round trips where HF round-trips, and the special tokens that
// add_special_tokens adds. Also the GGUF-style vocabularies built by make_tokenizer_from_vocab.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab_spec.h"

namespace anvil {
namespace {

const std::string kDataDir = std::string(ANVIL_SOURCE_DIR) + "/tests/data/tokenizers/";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(read_text(path));
}

std::string hex_bytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

struct CorpusEntry {
  std::string category;
  std::string raw;  // the bytes given to encode (may be invalid UTF-8)
};

const std::vector<CorpusEntry>& corpus() {
  static const std::vector<CorpusEntry> entries = [] {
    std::vector<CorpusEntry> out;
    const nlohmann::json doc = read_json(kDataDir + "corpus.json");
    for (const auto& e : doc["entries"]) {
      out.push_back({e["category"].get<std::string>(),
                     e.contains("text") ? e["text"].get<std::string>() : hex_bytes(e["hex"].get<std::string>())});
    }
    EXPECT_GT(out.size(), 200u);
    return out;
  }();
  return entries;
}

std::string printable(const std::string& s) {
  std::string out;
  for (const char c : s.substr(0, 80)) {
    const auto b = static_cast<uint8_t>(c);
    if (b < 0x20 || b == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", b);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// The tokenizer.json of a family: tests/data/tokenizers/NAME/tokenizer.json, or a variant (a base file plus a
// JSON merge patch).
nlohmann::json family_json(const std::string& name) {
  const std::string variant = kDataDir + "variants/" + name + ".json";
  if (std::ifstream(variant).good()) {
    const nlohmann::json v = read_json(variant);
    nlohmann::json doc = read_json(kDataDir + v["base"].get<std::string>());
    doc.merge_patch(v["patch"]);
    return doc;
  }
  return read_json(kDataDir + name + "/tokenizer.json");
}

std::unique_ptr<HfTokenizer> load_family(const std::string& name) {
  auto tok = parse_hf_tokenizer_json(family_json(name).dump(), name);
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

std::vector<int32_t> ids_of(const nlohmann::json& j) {
  return j.get<std::vector<int32_t>>();
}

class HfTokenizerAgreement : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tok_ = load_family(GetParam());
    ASSERT_NE(tok_, nullptr);
    ref_ = read_json(kDataDir + "reference/" + GetParam() + ".json");
    ASSERT_EQ(ref_["entries"].size(), corpus().size());
  }
  std::unique_ptr<HfTokenizer> tok_;
  nlohmann::json ref_;
};

TEST_P(HfTokenizerAgreement, IdsMatchOnWholeCorpus) {
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    const CorpusEntry& entry = corpus()[i];
    auto ids = tok_->encode(entry.raw, EncodeOptions{.add_bos = false});
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    const std::vector<int32_t> expected = ids_of(ref_["entries"][i]["ids"]);
    if (ids.value() != expected && ++mismatches <= 5) {
      ADD_FAILURE() << GetParam() << " entry " << i << " (" << entry.category << ") \"" << printable(entry.raw)
                    << "\": " << testing::PrintToString(ids.value()) << " != HF " << testing::PrintToString(expected);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << corpus().size() << " entries";
}

TEST_P(HfTokenizerAgreement, DecodeMatchesHf) {
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    const nlohmann::json& r = ref_["entries"][i];
    const std::vector<int32_t> ids = ids_of(r["ids"]);
    const std::string text = to_valid_utf8(corpus()[i].raw);
    const std::string expected = r.contains("decoded") ? r["decoded"].get<std::string>() : text;
    const std::string expected_skip =
        r.contains("decoded_skip_special") ? r["decoded_skip_special"].get<std::string>() : expected;
    const std::string got = tok_->decode_hf(ids, /*skip_special_tokens=*/false);
    const std::string got_skip = tok_->decode_hf(ids, /*skip_special_tokens=*/true);
    if ((got != expected || got_skip != expected_skip) && ++mismatches <= 5) {
      ADD_FAILURE() << GetParam() << " entry " << i << ": \"" << printable(got) << "\" / \"" << printable(got_skip)
                    << "\" != HF \"" << printable(expected) << "\" / \"" << printable(expected_skip) << "\"";
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST_P(HfTokenizerAgreement, RoundTripsWhereHfDoes) {
  size_t checked = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    if (ref_["entries"][i].contains("decoded")) continue;  // HF itself does not give this text back
    const std::string text = to_valid_utf8(corpus()[i].raw);
    auto ids = tok_->encode(corpus()[i].raw, EncodeOptions{.add_bos = false});
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(tok_->decode_with_special_tokens(ids.value()), text) << GetParam() << " entry " << i;
    ++checked;
  }
  EXPECT_EQ(checked + ref_["num_not_round_trip"].get<size_t>(), corpus().size());
}

TEST_P(HfTokenizerAgreement, AddSpecialTokensMatchesHf) {
  size_t checked = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    const nlohmann::json& r = ref_["entries"][i];
    if (!r.contains("ids_with_special")) continue;
    auto ids = tok_->encode(corpus()[i].raw, EncodeOptions{.add_bos = true});
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids.value(), ids_of(r["ids_with_special"])) << GetParam() << " entry " << i;
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}

// The streaming path (token_bytes + the leading-space rule, as IncrementalDetokenizer uses it) gives HF's
// decode without special tokens, wherever no invalid UTF-8 comes out of byte-fallback tokens (HF's
// ByteFallback writes one U+FFFD per byte there, the stream one per maximal subpart).
TEST_P(HfTokenizerAgreement, StreamedDecodeMatchesHfSkippingSpecialTokens) {
  size_t checked = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    const nlohmann::json& r = ref_["entries"][i];
    const std::string expected = r.contains("decoded_skip_special") ? r["decoded_skip_special"].get<std::string>()
                                 : r.contains("decoded")            ? r["decoded"].get<std::string>()
                                                                    : to_valid_utf8(corpus()[i].raw);
    const std::vector<int32_t> ids = ids_of(r["ids"]);
    const std::string got = tok_->decode(ids);
    if (got != expected && expected.find(kReplacementChar) != std::string::npos) continue;
    EXPECT_EQ(got, expected) << GetParam() << " entry " << i;
    ++checked;
  }
  EXPECT_GT(checked, corpus().size() * 9 / 10);
}

INSTANTIATE_TEST_SUITE_P(Families, HfTokenizerAgreement,
                         testing::Values("gpt2", "llama3", "qwen2", "smollm2", "llama2", "mistral",
                                         "smollm2_transformers_gguf", "llama2_added_flags"));

// ---- GGUF-style vocabularies -------------------------------------------------------------------------

// A VocabSpec as a GGUF "gpt2" file would hold the family's tokenizer.json: every id's token, the merges,
// special added tokens as CONTROL.
VocabSpec gpt2_spec_from_json(const nlohmann::json& doc, const std::string& pre) {
  VocabSpec spec;
  spec.model = "gpt2";
  spec.pre = pre;
  spec.source = "test";
  const nlohmann::json& vocab = doc["model"]["vocab"];
  size_t size = vocab.size();
  for (const auto& t : doc["added_tokens"]) size = std::max<size_t>(size, t["id"].get<size_t>() + 1);
  spec.tokens.resize(size);
  spec.token_types.assign(size, static_cast<int32_t>(VocabTokenType::kNormal));
  for (auto it = vocab.begin(); it != vocab.end(); ++it) spec.tokens[it.value().get<size_t>()] = it.key();
  for (const auto& t : doc["added_tokens"]) {
    const auto id = t["id"].get<size_t>();
    spec.tokens[id] = t["content"].get<std::string>();
    spec.token_types[id] =
        static_cast<int32_t>(t["special"].get<bool>() ? VocabTokenType::kControl : VocabTokenType::kUserDefined);
  }
  for (const auto& m : doc["model"]["merges"]) {
    spec.merges.push_back(m.is_string() ? m.get<std::string>()
                                        : m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  return spec;
}

class Gpt2VocabSpec : public testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(Gpt2VocabSpec, MatchesTheFamilysTokenizerJson) {
  const auto& [family, pre] = GetParam();
  const VocabSpec spec = gpt2_spec_from_json(family_json(family), pre);
  auto tok = make_tokenizer_from_vocab(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  const nlohmann::json ref = read_json(kDataDir + "reference/" + family + ".json");
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    auto ids = tok.value()->encode(corpus()[i].raw, EncodeOptions{.add_bos = false});
    ASSERT_TRUE(ids.ok());
    if (ids.value() != ids_of(ref["entries"][i]["ids"]) && ++mismatches <= 3) {
      ADD_FAILURE() << family << " entry " << i << " \"" << printable(corpus()[i].raw) << "\"";
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

INSTANTIATE_TEST_SUITE_P(PreTokenizers, Gpt2VocabSpec,
                         testing::Values(std::pair{"smollm2", "smollm"}, std::pair{"gpt2", "gpt2"},
                                         std::pair{"llama3", "llama-bpe"}, std::pair{"qwen2", "qwen2"}));

VocabSpec llama_spec() {
  const nlohmann::json j = read_json(kDataDir + "llama_gguf_vocab.json");
  VocabSpec spec;
  spec.model = j["model"].get<std::string>();
  spec.tokens = j["tokens"].get<std::vector<std::string>>();
  spec.scores = j["scores"].get<std::vector<float>>();
  spec.token_types = j["token_types"].get<std::vector<int32_t>>();
  spec.bos_id = j["bos_id"].get<int32_t>();
  spec.eos_id = j["eos_id"].get<int32_t>();
  spec.unk_id = j["unk_id"].get<int32_t>();
  spec.add_bos = j["add_bos"].get<bool>();
  spec.add_space_prefix = j["add_space_prefix"].get<bool>();
  spec.source = "llama_gguf_vocab.json";
  return spec;
}

TEST(LlamaVocabSpec, MergesFromScoresMatchTransformersGgufConverter) {
  auto tok = make_tokenizer_from_vocab(llama_spec());
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  const nlohmann::json ref = read_json(kDataDir + "reference/llama_gguf.json");
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    const nlohmann::json& r = ref["entries"][i];
    auto ids = tok.value()->encode(corpus()[i].raw, EncodeOptions{.add_bos = false});
    ASSERT_TRUE(ids.ok());
    if (ids.value() != ids_of(r["ids"]) && ++mismatches <= 3) {
      ADD_FAILURE() << "entry " << i << " \"" << printable(corpus()[i].raw)
                    << "\": " << testing::PrintToString(ids.value())
                    << " != " << testing::PrintToString(ids_of(r["ids"]));
    }
    const std::string expected =
        r.contains("decoded") ? r["decoded"].get<std::string>() : to_valid_utf8(corpus()[i].raw);
    EXPECT_EQ(tok.value()->decode_with_special_tokens(ids_of(r["ids"])), expected) << "entry " << i;
  }
  EXPECT_EQ(mismatches, 0u);
  // add_bos puts the BOS id in front.
  auto with_bos = tok.value()->encode("Hello world", EncodeOptions{.add_bos = true});
  auto without = tok.value()->encode("Hello world", EncodeOptions{.add_bos = false});
  ASSERT_TRUE(with_bos.ok() && without.ok());
  std::vector<int32_t> expected{tok.value()->bos_id()};
  expected.insert(expected.end(), without.value().begin(), without.value().end());
  EXPECT_EQ(with_bos.value(), expected);
  EXPECT_EQ(tok.value()->bos_id(), llama_spec().bos_id);
}

// ---- loading, special ids and configuration --------------------------------------------------------

TEST(HfTokenizerLoad, DirectoryWithTokenizerConfigSetsBosAndEos) {
  auto tok = load_hf_tokenizer(kDataDir + "smollm2");
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok.value()->bos_id(), tok.value()->token_to_id("<|im_start|>"));
  EXPECT_EQ(tok.value()->eos_id(), tok.value()->token_to_id("<|im_end|>"));
  EXPECT_EQ(tok.value()->vocab_size(), 49152);
  EXPECT_EQ(tok.value()->id_to_token(tok.value()->bos_id()), "<|im_start|>");
  EXPECT_EQ(tok.value()->id_to_token(*tok.value()->token_to_id("\xC4\xA0the")), "\xC4\xA0the");  // "Ġthe"
  EXPECT_EQ(tok.value()->id_to_token(49152), std::nullopt);
  // The same file alone takes BOS/EOS from common names when the post-processor adds none.
  auto file = load_hf_tokenizer(kDataDir + "llama2/tokenizer.json");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file.value()->bos_id(), file.value()->token_to_id("<s>"));
  EXPECT_EQ(file.value()->eos_id(), file.value()->token_to_id("</s>"));
}

// A directory with tokenizer_config.json encodes as transformers' AutoTokenizer does: BOS/EOS ids from the
// config, and tokenizer.json's post-processor (transformers 5 keeps it despite add_bos_token/add_eos_token).
TEST(HfTokenizerLoad, DirectoryMatchesTransformersAutoTokenizer) {
  const nlohmann::json ref = read_json(kDataDir + "reference/transformers_config.json");
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "anvil_transformers_config";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kDataDir + ref["base"].get<std::string>(), dir / "tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json") << ref["tokenizer_config"].dump();
  auto tok = load_hf_tokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok.value()->bos_id(), ref["bos_token_id"].get<int32_t>());
  EXPECT_EQ(tok.value()->eos_id(), ref["eos_token_id"].get<int32_t>());
  for (size_t i = 0; i < ref["texts"].size(); ++i) {
    auto ids = tok.value()->encode(ref["texts"][i].get<std::string>(), EncodeOptions{.add_bos = true});
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids.value(), ids_of(ref["input_ids"][i])) << ref["texts"][i];
  }
  std::filesystem::remove_all(dir);
}

TEST(HfTokenizerLoad, TemplateWithEosAddsBothEnds) {
  nlohmann::json doc = family_json("llama2");
  doc["post_processor"]["single"].push_back({{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}});
  doc["post_processor"]["special_tokens"]["</s>"] = {
      {"id", "</s>"}, {"ids", {doc["model"]["vocab"]["</s>"]}}, {"tokens", {"</s>"}}};
  auto tok = parse_hf_tokenizer_json(doc.dump(), "eos.json");
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  const auto& t = *tok.value();
  auto plain = t.encode("The quick brown fox", EncodeOptions{.add_bos = false});
  auto wrapped = t.encode("The quick brown fox", EncodeOptions{.add_bos = true});
  ASSERT_TRUE(plain.ok() && wrapped.ok());
  std::vector<int32_t> expected{t.bos_id()};
  expected.insert(expected.end(), plain.value().begin(), plain.value().end());
  expected.push_back(t.eos_id());
  EXPECT_EQ(wrapped.value(), expected);
  EXPECT_EQ(t.eos_id(), t.token_to_id("</s>"));
}

TEST(HfTokenizerLoad, SpecialTokensAreNeverSplit) {
  auto tok = load_family("qwen2");
  ASSERT_NE(tok, nullptr);
  const auto im_start = tok->token_to_id("<|im_start|>");
  ASSERT_TRUE(im_start.has_value());
  auto ids = tok->encode("x<|im_start|><|im_start|>y", EncodeOptions{.add_bos = false});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::count(ids.value().begin(), ids.value().end(), *im_start), 2);
  EXPECT_EQ(tok->decode_with_special_tokens(ids.value()), "x<|im_start|><|im_start|>y");
  EXPECT_EQ(tok->decode(ids.value()), "xy");
}

TEST(HfTokenizerLoad, InvalidUtf8IsEncodedAsReplacementCharacters) {
  auto tok = load_family("gpt2");
  ASSERT_NE(tok, nullptr);
  const std::string bad = "caf\xE9 \xF0\x9F\x98 ok\xFF";
  auto ids = tok->encode(bad, EncodeOptions{.add_bos = false});
  auto replaced = tok->encode(to_valid_utf8(bad), EncodeOptions{.add_bos = false});
  ASSERT_TRUE(ids.ok() && replaced.ok());
  EXPECT_EQ(ids.value(), replaced.value());
  EXPECT_EQ(tok->decode(ids.value()), to_valid_utf8(bad));
}

// ---- bad input ------------------------------------------------------------------------------------

Status parse_error(const nlohmann::json& doc) {
  auto tok = parse_hf_tokenizer_json(doc.dump(), "bad.json");
  return tok.ok() ? Status() : tok.status();
}

TEST(HfTokenizerBadInput, UnknownComponentTypesAreNamed) {
  struct Case {
    const char* field;
    nlohmann::json value;
    const char* name;
  };
  const std::vector<Case> cases = {
      {"pre_tokenizer", {{"type", "UnicodeScripts"}}, "UnicodeScripts"},
      {"normalizer", {{"type", "Precompiled"}, {"precompiled_charsmap", "x"}}, "Precompiled"},
      {"decoder", {{"type", "WordPiece"}}, "WordPiece"},
      {"post_processor", {{"type", "Frobnicate"}}, "Frobnicate"},
      {"model", {{"type", "Unigram"}, {"vocab", nlohmann::json::array()}}, "Unigram"},
  };
  for (const Case& c : cases) {
    nlohmann::json doc = family_json("gpt2");
    doc[c.field] = c.value;
    const Status s = parse_error(doc);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << c.field << ": " << s.to_string();
    EXPECT_NE(s.message().find(c.name), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("bad.json"), std::string::npos) << s.message();
  }
}

TEST(HfTokenizerBadInput, MalformedJsonIsAnError) {
  for (const std::string text : {"", "{", "{\"model\": }", "[1, 2]", "null", "{\"model\": {\"type\": \"BPE\"}}"}) {
    auto tok = parse_hf_tokenizer_json(text, "bad.json");
    ASSERT_FALSE(tok.ok()) << text;
    EXPECT_EQ(tok.status().code(), StatusCode::kInvalidFile) << tok.status().to_string();
    EXPECT_NE(tok.status().message().find("bad.json"), std::string::npos);
  }
}

TEST(HfTokenizerBadInput, MergesNamingUnknownTokensAreErrors) {
  nlohmann::json doc = family_json("gpt2");
  doc["model"]["merges"].push_back("zzz_not_a_token Ġthe");
  Status s = parse_error(doc);
  EXPECT_EQ(s.code(), StatusCode::kInvalidFile);
  EXPECT_NE(s.message().find("zzz_not_a_token"), std::string::npos) << s.message();

  doc = family_json("gpt2");
  doc["model"]["merges"].push_back("a b c");
  s = parse_error(doc);
  EXPECT_NE(s.message().find("model.merges["), std::string::npos) << s.message();

  doc = family_json("gpt2");
  doc["model"]["vocab"]["neg"] = -3;
  s = parse_error(doc);
  EXPECT_NE(s.message().find("model.vocab.neg"), std::string::npos) << s.message();
}

TEST(HfTokenizerBadInput, UnsupportedRegexConstructsAreNamed) {
  // Constructs whose Oniguruma meaning PCRE2 has no equal for (see regex_syntax.h).
  for (const auto& [pattern, name] : std::vector<std::pair<std::string, std::string>>{
           {"(?x) a", "(?x)"}, {"[[:alpha:]]", "POSIX"}, {"\\p{N}{2}+", "{n,m}+"}, {"[a&&b]", "&&"}}) {
    nlohmann::json doc = family_json("llama3");
    doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern;
    const Status s = parse_error(doc);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << pattern << ": " << s.to_string();
    EXPECT_NE(s.message().find(name), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("pre_tokenizer.pretokenizers[0].pattern"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("bad.json"), std::string::npos) << s.message();
  }
  nlohmann::json doc = family_json("llama3");
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(abc";
  const Status s = parse_error(doc);
  EXPECT_EQ(s.code(), StatusCode::kInvalidFile);
  EXPECT_NE(s.message().find("\"(abc\""), std::string::npos) << s.message();
}

TEST(HfTokenizerBadInput, CatastrophicRegexGivesUpWithAnError) {
  nlohmann::json doc = family_json("llama3");
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(?:a|a)*\\d";
  auto tok = parse_hf_tokenizer_json(doc.dump(), "slow.json");
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  auto ids = tok.value()->encode(std::string(40, 'a'), EncodeOptions{.add_bos = false});
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), StatusCode::kResourceExhausted);
}

TEST(HfTokenizerBadInput, MissingFilesAreNamed) {
  auto missing = load_hf_tokenizer("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
  auto empty_dir = load_hf_tokenizer(kDataDir + "variants");
  ASSERT_FALSE(empty_dir.ok());
  EXPECT_NE(empty_dir.status().message().find("has no tokenizer.json"), std::string::npos);
}

TEST(VocabSpecBadInput, ErrorsNameTheProblem) {
  VocabSpec base;
  base.model = "gpt2";
  base.tokens = {"a", "b", "ab"};
  base.merges = {"a b"};
  base.source = "model.gguf";
  ASSERT_TRUE(make_tokenizer_from_vocab(base).ok());

  auto expect_error = [](const VocabSpec& spec, const std::string& needle) {
    auto tok = make_tokenizer_from_vocab(spec);
    ASSERT_FALSE(tok.ok()) << needle;
    EXPECT_NE(tok.status().message().find(needle), std::string::npos) << tok.status().to_string();
    EXPECT_NE(tok.status().message().find("model.gguf"), std::string::npos) << tok.status().to_string();
  };
  VocabSpec s = base;
  s.model = "bert";
  expect_error(s, "\"bert\"");
  s = base;
  s.pre = "made-up";
  expect_error(s, "\"made-up\"");
  s = base;
  s.token_types = {1, 1};
  expect_error(s, "2 token types for 3 tokens");
  s = base;
  s.bos_id = 3;
  expect_error(s, "bos id 3");
  s = base;
  s.merges = {"a c"};
  expect_error(s, "\"c\"");
  s = base;
  s.merges = {"ab"};
  expect_error(s, "merge 0");
  s = base;
  s.tokens[1] = "\xFF";
  expect_error(s, "token 1 is not valid UTF-8");
  s = base;
  s.model = "llama";
  s.merges.clear();
  expect_error(s, "needs scores");
}

}  // namespace
}  // namespace anvil
