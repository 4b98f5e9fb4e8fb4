// RFC 4648 base64: known vectors, missing padding, bad input.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "protocol/base64.hpp"

namespace b64 = tlsport::protocol::base64;

namespace {

std::string enc(std::string_view in) {
  std::string out;
  b64::encode(in, out);
  return out;
}

/// Decodes, returning "<bad>" on failure (and checking `out` was left alone).
std::string dec(std::string_view in) {
  std::string out = "prefix";
  if (!b64::decode(in, out)) {
    EXPECT_EQ(out, "prefix") << "a failed decode must append nothing";
    return "<bad>";
  }
  EXPECT_EQ(out.substr(0, 6), "prefix");
  return out.substr(6);
}

}  // namespace

TEST(Base64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, coded] : vectors) {
    EXPECT_EQ(enc(plain), coded) << plain;
    EXPECT_EQ(dec(coded), plain) << coded;
    EXPECT_EQ(b64::encoded_size(std::string_view(plain).size()), std::string_view(coded).size());
  }
}

TEST(Base64, EncodeAppends) {
  std::string out = "x:";
  b64::encode("hi", out);
  EXPECT_EQ(out, "x:aGk=");
}

TEST(Base64, ProtocolExamples) {
  // docs/protocol.md §2.1 and §6.1.
  EXPECT_EQ(dec("aGVsbG8="), "hello");
  EXPECT_EQ(enc("HTTP/1.0 200 ok\r\n"), "SFRUUC8xLjAgMjAwIG9rDQo=");
}

TEST(Base64, MissingPaddingTolerated) {
  EXPECT_EQ(dec("Zg"), "f");
  EXPECT_EQ(dec("Zm8"), "fo");
  EXPECT_EQ(dec("Zm9vYg"), "foob");
  EXPECT_EQ(dec("Zm9vYmE"), "fooba");
}

TEST(Base64, BadInputRejected) {
  const char* bad[] = {
      "Z",          // 6 bits make no byte
      "Zm9vY",      // the same after a whole group
      "Zm9v!",      // not in the alphabet
      "Zm 9v",      // no whitespace
      "Zm9v\n",     //
      "Zg=",        // partial padding
      "Zg===",      // too much padding
      "=",          //
      "====",       //
      "Zm9vYmFy=",  // padding after a whole group
      "Zm=v",       // padding inside
      "Zg==Zg==",   // data after padding
      "Zm9v_-8=",   // URL-safe alphabet is not RFC 4648 §4
      "\xff\xfe",   // non-ASCII
  };
  for (const char* s : bad) EXPECT_EQ(dec(s), "<bad>") << s;
  EXPECT_EQ(dec(std::string("Zm\0v", 4)), "<bad>");
}

TEST(Base64, RoundTripAllBytesAndLengths) {
  std::mt19937 rng(42);
  for (std::size_t len = 0; len < 300; ++len) {
    std::string plain(len, '\0');
    for (auto& c : plain) c = static_cast<char>(rng() & 0xFF);
    const std::string coded = enc(plain);
    ASSERT_EQ(coded.size(), b64::encoded_size(len));
    ASSERT_EQ(dec(coded), plain) << len;
    // Without its padding it decodes the same.
    std::string bare = coded;
    while (!bare.empty() && bare.back() == '=') bare.pop_back();
    ASSERT_EQ(dec(bare), plain) << len;
  }
  std::string every;
  for (int i = 0; i < 256; ++i) every.push_back(static_cast<char>(i));
  EXPECT_EQ(dec(enc(every)), every);
}
