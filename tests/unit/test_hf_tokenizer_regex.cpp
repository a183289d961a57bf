// The tokenizer's regex engine (Oniguruma semantics for tokenizer.json split patterns) and its Unicode helpers:
// match iteration, backtracking, lookahead, lazy/possessive repeats, case folding, classes, errors, the step
// budget, and NFC/NFD. Whole-pattern agreement with HF is in test_hf_tokenizer.cpp (every family, every
// code point was also swept by hand: see the report in bench/results/tokenizer.md).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_props.h"

namespace anvil {
namespace {

std::vector<std::string> matches_of(const std::string& pattern, const std::string& text) {
  auto p = Pattern::regex(pattern, "test");
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  if (!p.ok()) return {};
  std::vector<MatchRange> ranges;
  const Status s = p.value().find_all(text, ranges);
  EXPECT_TRUE(s.ok()) << s.to_string();
  std::vector<std::string> out;
  for (const auto& [start, end] : ranges) out.push_back(text.substr(start, end - start));
  return out;
}

using Strings = std::vector<std::string>;

TEST(TokenizerRegex, Gpt2PatternSplitsWordsNumbersPunctuationAndSpaces) {
  EXPECT_EQ(matches_of(kGpt2SplitPattern, "Hello world's  123!!\n\n x"),
            (Strings{"Hello", " world", "'s", " ", " 123", "!!", "\n\n", " x"}));
  EXPECT_EQ(matches_of(kGpt2SplitPattern, "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC"),
            (Strings{"caf\xC3\xA9", " \xE6\x97\xA5\xE6\x9C\xAC"}));
}

TEST(TokenizerRegex, NegativeLookaheadBacktracksTheGreedyRun) {
  EXPECT_EQ(matches_of(R"(\s+(?!\S))", "a   b  "), (Strings{"  ", "  "}));
  EXPECT_EQ(matches_of(R"(\s+(?=b))", "a   b"), (Strings{"   "}));
}

TEST(TokenizerRegex, AlternationIsLeftmostFirstNotLongest) {
  EXPECT_EQ(matches_of("a|ab", "ab"), (Strings{"a"}));
  EXPECT_EQ(matches_of("ab|a", "ab"), (Strings{"ab"}));
}

TEST(TokenizerRegex, LazyPossessiveAndCountedRepeats) {
  EXPECT_EQ(matches_of("a+?", "aaa"), (Strings{"a", "a", "a"}));
  EXPECT_EQ(matches_of("a++a", "aaa"), Strings{});
  EXPECT_EQ(matches_of("a+a", "aaa"), (Strings{"aaa"}));
  EXPECT_EQ(matches_of(R"(\p{N}{1,3})", "1234567"), (Strings{"123", "456", "7"}));
  EXPECT_EQ(matches_of("(?:ab){2}", "ababab"), (Strings{"abab"}));
  EXPECT_EQ(matches_of("x{,2}y", "xxxy"), (Strings{"xxy"}));
  EXPECT_EQ(matches_of("a{", "a{"), (Strings{"a{"}));  // not an interval: a literal brace, as in Oniguruma
}

TEST(TokenizerRegex, EmptyMatchesAdvanceLikeOniguruma) {
  EXPECT_EQ(matches_of("a*", "baa"), (Strings{"", "aa"}));
  EXPECT_EQ(matches_of("x?", ""), (Strings{""}));
}

TEST(TokenizerRegex, CaseInsensitiveGroupsUseCaseFolding) {
  EXPECT_EQ(matches_of("(?i:'s|'ll)", "'S 'Ll 's '\xC5\xBF"), (Strings{"'S", "'Ll", "'s", "'\xC5\xBF"}));
  EXPECT_EQ(matches_of("(?i)k", "kK\xE2\x84\xAA"), (Strings{"k", "K", "\xE2\x84\xAA"}));  // KELVIN SIGN
  EXPECT_EQ(matches_of("(?i:a)b", "Ab AB"), (Strings{"Ab"}));
}

TEST(TokenizerRegex, ClassesUseUnicodeProperties) {
  EXPECT_EQ(matches_of(R"(\p{Lu}+)", "abcDEF\xC3\x89g"), (Strings{"DEF\xC3\x89"}));
  EXPECT_EQ(matches_of(R"([^\s\p{L}\p{N}]+)", "a!?b 3\xE2\x80\x94"), (Strings{"!?", "\xE2\x80\x94"}));
  EXPECT_EQ(matches_of(R"(\S+)",
                       "a\xC2\xA0"
                       "b\xE3\x80\x80"
                       "c"),
            (Strings{"a", "b", "c"}));
  EXPECT_EQ(matches_of(R"([\x{4e00}-\x{9fff}]+)", "x\xE4\xBD\xA0\xE5\xA5\xBDy"), (Strings{"\xE4\xBD\xA0\xE5\xA5\xBD"}));
  EXPECT_EQ(matches_of(R"(\d+)",
                       "7\xD9\xA3"
                       "x"),
            (Strings{"7\xD9\xA3"}));  // ARABIC-INDIC DIGIT THREE
  EXPECT_EQ(matches_of(".", "a\nb"), (Strings{"a", "b"}));
}

TEST(TokenizerRegex, AnchorsAreLineAnchorsAsInRubySyntax) {
  EXPECT_EQ(matches_of("^a", "ab\nab"), (Strings{"a", "a"}));
  EXPECT_EQ(matches_of(R"(\Aa)", "ab\nab"), (Strings{"a"}));
  EXPECT_EQ(matches_of("b$", "ab\nab"), (Strings{"b", "b"}));
  EXPECT_EQ(matches_of(R"(\bx)", "x ax x"), (Strings{"x", "x"}));
}

TEST(TokenizerRegex, UnsupportedAndMalformedPatternsAreErrors) {
  for (const std::string& pattern : Strings{"(?<=a)b", "(?<!a)b", "\\p{Greek}", "a\\1", "[[:alpha:]]", "[a&&b]",
                                            "(?x)a", "(?:a*)*", std::string(101, '(') + std::string(101, ')')}) {
    auto p = Pattern::regex(pattern, "f.json: pattern");
    ASSERT_FALSE(p.ok()) << pattern;
    EXPECT_EQ(p.status().code(), StatusCode::kUnsupported) << pattern << ": " << p.status().to_string();
    EXPECT_NE(p.status().message().find("f.json: pattern"), std::string::npos);
  }
  for (const std::string& pattern : Strings{"(a", "a)", "[a", "*a", "a{3,1}", "\\x{110000}", "\\"}) {
    auto p = Pattern::regex(pattern, "f.json: pattern");
    ASSERT_FALSE(p.ok()) << pattern;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidFile) << pattern << ": " << p.status().to_string();
    EXPECT_NE(p.status().message().find("offset"), std::string::npos);
  }
}

TEST(TokenizerRegex, CatastrophicBacktrackingHitsTheStepBudget) {
  auto p = Pattern::regex("(?:a|a)*b", "test");
  ASSERT_TRUE(p.ok());
  std::vector<MatchRange> ranges;
  const Status s = p.value().find_all(std::string(40, 'a'), ranges);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
}

TEST(TokenizerRegex, LiteralPatternsFindNonOverlappingOccurrences) {
  std::vector<MatchRange> ranges;
  ASSERT_TRUE(Pattern::literal("aa").find_all("aaaaa", ranges).ok());
  EXPECT_EQ(ranges, (std::vector<MatchRange>{{0, 2}, {2, 4}}));
  ASSERT_TRUE(Pattern::literal("").find_all("abc", ranges).ok());
  EXPECT_TRUE(ranges.empty());
}

std::string nfc(std::string s) {
  normalize_unicode(s, NormalForm::kNfc);
  return s;
}

std::string nfd(std::string s) {
  normalize_unicode(s, NormalForm::kNfd);
  return s;
}

TEST(TokenizerUnicode, NfcComposesAndNfdDecomposesInCanonicalOrder) {
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");  // e + COMBINING ACUTE -> é
  EXPECT_EQ(nfd("\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul jamo -> 각
  EXPECT_EQ(nfd("\xEA\xB0\x81"), "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
  // q + dot below (220) + acute (230) and the other order both end as q, dot below, acute.
  EXPECT_EQ(nfc("q\xCC\x81\xCC\xA3"), "q\xCC\xA3\xCC\x81");
  // An acute after a cedilla composes with the base across the non-blocking mark: ç + acute -> ḉ.
  EXPECT_EQ(nfc("c\xCC\xA7\xCC\x81"), "\xE1\xB8\x89");
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
}

TEST(TokenizerUnicode, CharacterPredicatesFollowRust) {
  EXPECT_TRUE(is_white_space(U'\u3000'));
  EXPECT_TRUE(is_white_space(U'\u0085'));
  EXPECT_FALSE(is_white_space(U'\u200B'));  // ZERO WIDTH SPACE is not White_Space
  EXPECT_TRUE(is_numeric(U'\u00BD'));       // ½ (No)
  EXPECT_TRUE(is_numeric(U'\u2167'));       // Ⅷ (Nl)
  EXPECT_FALSE(is_numeric(U'x'));
  EXPECT_EQ(simple_case_fold(U'\u017F'), U's');
  EXPECT_EQ(general_category(U'\u00E9'), unicode_tables::kLl);
}

}  // namespace
}  // namespace anvil
