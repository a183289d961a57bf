// The tokenizer's regexes (Oniguruma meaning for tokenizer.json split patterns, run on PCRE2) and its Unicode
// helpers: match iteration, backtracking, lookahead, lazy/possessive repeats, case folding, classes, the
// Oniguruma -> PCRE2 rewrite, errors, the backtracking bound, invalid UTF-8, threads, and NFC/NFD. Whole-pattern
// agreement with HF is in test_hf_tokenizer.cpp (every family; every code point was also swept against HF's
// Split: see bench/results/tokenizer.md).
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/regex_syntax.h"
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

constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

TEST(TokenizerRegex, Llama3PatternOnTrickyText) {
  EXPECT_EQ(matches_of(kLlama3Pattern, "I'M here  \r\n\r\n  12345 don't!!!\n"),
            (Strings{"I", "'M", " here", "  \r\n\r\n", " ", " ", "123", "45", " don", "'t", "!!!\n"}));
  // U+180E is not White_Space (PCRE2's own \s would take it); U+1C89 is a letter since Unicode 16 (PCRE2 10.42
  // has Unicode 14 tables, so the rewrite adds it to \p{L}).
  EXPECT_EQ(matches_of(kLlama3Pattern, "a\xE1\xA0\x8E b \xE1\xB2\x89\xE1\xB2\x89"),
            (Strings{"a", "\xE1\xA0\x8E", " b", " \xE1\xB2\x89\xE1\xB2\x89"}));
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

TEST(TokenizerRegex, OnigurumaOnlyMeaningsAreRewritten) {
  EXPECT_EQ(matches_of(R"(\w+)", "a\xC2\xBD_1 \xE2\x80\x8D"), (Strings{"a\xC2\xBD_1"}));  // ½ is a word char, ZWJ not
  EXPECT_EQ(matches_of(R"([\w]+)", "a\xC2\xBD"), (Strings{"a"}));  // ...but not inside a class (as in Oniguruma)
  EXPECT_EQ(matches_of(R"(\h+)", "xz0fA9g"), (Strings{"0fA9"}));   // hex digits, not horizontal space
  EXPECT_EQ(matches_of(R"(\v)", "a\x0B\n"), (Strings{"\x0B"}));    // vertical tab only
  EXPECT_EQ(matches_of(R"(\u00e9+)", "x\xC3\xA9\xC3\xA9"), (Strings{"\xC3\xA9\xC3\xA9"}));
  EXPECT_EQ(matches_of("(?m)a.b", "a\nb"), (Strings{"a\nb"}));  // Oniguruma's m is PCRE2's s
  EXPECT_EQ(matches_of(R"(\P{L}+)", "ab12 \xE1\xB2\x89!"), (Strings{"12 ", "!"}));
  EXPECT_EQ(matches_of(R"([^\P{N}]+)", "ab12c"), (Strings{"12"}));
  auto t = regex_internal::onig_to_pcre2(R"([^\s]{,2}\s)");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value().pcre2, R"([^\p{White_Space}]{0,2}\p{White_Space})");
  EXPECT_EQ(t.value().source_byte.size(), t.value().pcre2.size() + 1);
}

TEST(TokenizerRegex, ConstructsOnigurumaOnlyHasAreNowSupported) {
  EXPECT_EQ(matches_of("(?<=a)b", "ab cb"), (Strings{"b"}));
  EXPECT_EQ(matches_of("(?<!a)b", "ab cb"), (Strings{"b"}));
  EXPECT_EQ(matches_of(R"(\p{Greek}+)", "abc\xCE\xB1\xCE\xB2"), (Strings{"\xCE\xB1\xCE\xB2"}));
  EXPECT_EQ(matches_of(R"((a)\1)", "aab aa"), (Strings{"aa", "aa"}));
}

TEST(TokenizerRegex, PatternsWithoutAPcre2EqualAreUnsupported) {
  for (const std::string& pattern :
       Strings{"(?x)a", "[[:alpha:]]", "[a[b]]", "[a&&b]", "a{2}+", "a{2}?", "\\Qa\\E", "[\\W]", "(?s)a"}) {
    auto p = Pattern::regex(pattern, "f.json: pattern");
    ASSERT_FALSE(p.ok()) << pattern;
    EXPECT_EQ(p.status().code(), StatusCode::kUnsupported) << pattern << ": " << p.status().to_string();
    EXPECT_NE(p.status().message().find("f.json: pattern"), std::string::npos);
    EXPECT_NE(p.status().message().find("\"" + pattern + "\""), std::string::npos) << p.status().message();
  }
}

TEST(TokenizerRegex, MalformedPatternsNameThePatternAndTheOffset) {
  for (const std::string& pattern : Strings{"(a", "a)", "[a", "*a", "a{3,1}", "\\x{110000}", "\\"}) {
    auto p = Pattern::regex(pattern, "f.json: pattern");
    ASSERT_FALSE(p.ok()) << pattern;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidFile) << pattern << ": " << p.status().to_string();
    EXPECT_NE(p.status().message().find("f.json: pattern"), std::string::npos);
    EXPECT_NE(p.status().message().find("\"" + pattern + "\""), std::string::npos) << p.status().message();
    EXPECT_NE(p.status().message().find("offset"), std::string::npos);
  }
  // The offset is in the pattern as written, not in its PCRE2 rewrite.
  auto p = Pattern::regex(R"(\s\s))", "f.json: pattern");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("at offset 4"), std::string::npos) << p.status().message();
}

TEST(TokenizerRegex, CatastrophicBacktrackingHitsTheBound) {
  // No required literal for PCRE2 to rule the match out early: 2^40 ways to split the a's.
  auto p = Pattern::regex(R"((?:a|a)*\d)", "test");
  ASSERT_TRUE(p.ok());
  std::vector<MatchRange> ranges;
  const Status s = p.value().find_all(std::string(40, 'a'), ranges);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("(?:a|a)*\\d"), std::string::npos) << s.message();
}

TEST(TokenizerRegex, InvalidUtf8TextIsAnErrorNotACrash) {
  auto p = Pattern::regex(kGpt2SplitPattern, "test");
  ASSERT_TRUE(p.ok());
  std::vector<MatchRange> ranges;
  for (const std::string text : {"ab\xFF", "\xE6\x97", "caf\xE9 x", "\xED\xA0\x80"}) {  // the last: a surrogate
    const Status s = p.value().find_all(text, ranges);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("UTF-8"), std::string::npos) << s.message();
  }
}

TEST(TokenizerRegex, ConcurrentFindAllCallsAgree) {
  auto p = Pattern::regex(kLlama3Pattern, "test");
  ASSERT_TRUE(p.ok());
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Hello, w\xC3\xB6rld's 12345 \xE6\x97\xA5\xE6\x9C\xAC  \r\n";
  std::vector<MatchRange> expected;
  ASSERT_TRUE(p.value().find_all(text, expected).ok());
  ASSERT_GT(expected.size(), 1000u);
  std::vector<int> num_same(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<MatchRange> ranges;
      for (int i = 0; i < 50; ++i) num_same[t] += p.value().find_all(text, ranges).ok() && ranges == expected;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(num_same, (std::vector<int>{50, 50, 50, 50}));
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
