// Erlang external term format: bytes written by real Erlang (OTP 25), round
// trips, bytes checked by a real Erlang node, and malformed input.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "protocol/etf.hpp"

namespace etf = tlsport::protocol::etf;
using nlohmann::json;

namespace {

/// Bytes from a list of small integers, as Erlang prints binaries.
std::string bytes(std::initializer_list<int> list) {
  std::string out;
  for (int b : list) out.push_back(static_cast<char>(b));
  return out;
}

/// A json binary value.
json bin(std::string_view s) { return json::binary(std::vector<std::uint8_t>(s.begin(), s.end())); }

/// Decodes, failing the test on error.
json decode_ok(const std::string& in) {
  json out;
  std::string error;
  EXPECT_TRUE(etf::decode(in, out, error)) << error;
  return out;
}

/// Decodes expecting failure; returns the error message.
std::string decode_error(const std::string& in) {
  json out = "untouched";
  std::string error;
  EXPECT_FALSE(etf::decode(in, out, error)) << "decoded to " << out.dump();
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(out, "untouched") << "a failed decode must leave `out` alone";
  return error;
}

std::string encode(const json& value) {
  std::string out;
  etf::encode(value, out);
  return out;
}

// --- Fixtures: term_to_binary(...) on OTP 25 -------------------------------

// #{op => hello, ref => 1, name => <<"w">>, tls => #{verify => 2}, list => [1,2,3],
//   s => "str", big => 1 bsl 62, neg => -5, f => 1.5}
const std::string kBrief =
    bytes({131, 116, 0,   0,   0,   9,   100, 0,   3,   98,  105, 103, 110, 8,   0,   0,   0,   0,
           0,   0,   0,   0,   64,  100, 0,   1,   102, 70,  63,  248, 0,   0,   0,   0,   0,   0,
           100, 0,   4,   108, 105, 115, 116, 107, 0,   3,   1,   2,   3,   100, 0,   4,   110, 97,
           109, 101, 109, 0,   0,   0,   1,   119, 100, 0,   3,   110, 101, 103, 98,  255, 255, 255,
           251, 100, 0,   2,   111, 112, 100, 0,   5,   104, 101, 108, 108, 111, 100, 0,   3,   114,
           101, 102, 97,  1,   100, 0,   1,   115, 107, 0,   3,   115, 116, 114, 100, 0,   3,   116,
           108, 115, 116, 0,   0,   0,   1,   100, 0,   6,   118, 101, 114, 105, 102, 121, 97,  2});

// term_to_binary(#{op => hello, ref => 7, ok => true, bad => false, u => undefined,
//   n => null, z => nil, t => {1, <<"a">>, [x]}}, [{minor_version, 2}]): UTF-8 atoms,
// as OTP 26+ writes by default.
const std::string kUtf8Atoms =
    bytes({131, 116, 0,   0,   0,   8,   119, 3,   98,  97,  100, 119, 5,   102, 97,  108, 115,
           101, 119, 1,   110, 119, 4,   110, 117, 108, 108, 119, 2,   111, 107, 119, 4,   116,
           114, 117, 101, 119, 2,   111, 112, 119, 5,   104, 101, 108, 108, 111, 119, 3,   114,
           101, 102, 97,  7,   119, 1,   116, 104, 3,   97,  1,   109, 0,   0,   0,   1,   97,
           108, 0,   0,   0,   1,   119, 1,   120, 106, 119, 1,   117, 119, 9,   117, 110, 100,
           101, 102, 105, 110, 101, 100, 119, 1,   122, 119, 3,   110, 105, 108});

// term_to_binary([0, 255, 256, -1, -2147483648, 2147483647, 2147483648, -2147483649,
//   -(1 bsl 63), (1 bsl 63) - 1, (1 bsl 64) - 1])
const std::string kInts =
    bytes({131, 108, 0,   0,   0,   11,  97,  0,   97,  255, 98,  0,   0,   1,   0,   98,
           255, 255, 255, 255, 98,  128, 0,   0,   0,   98,  127, 255, 255, 255, 110, 4,
           0,   0,   0,   0,   128, 110, 4,   1,   1,   0,   0,   128, 110, 8,   1,   0,
           0,   0,   0,   0,   0,   0,   128, 110, 8,   0,   255, 255, 255, 255, 255, 255,
           255, 127, 110, 8,   0,   255, 255, 255, 255, 255, 255, 255, 255, 106});

// term_to_binary(#{listen, tls => #{certfile => <<"/c.pem">>, verify => 0}, mode =>
// <<"packet:2">>})
const std::string kNested =
    bytes({131, 116, 0,   0,   0,   3,   100, 0,   4,   109, 111, 100, 101, 109, 0,   0, 0,
           8,   112, 97,  99,  107, 101, 116, 58,  50,  100, 0,   2,   111, 112, 100, 0, 6,
           108, 105, 115, 116, 101, 110, 100, 0,   3,   116, 108, 115, 116, 0,   0,   0, 2,
           100, 0,   8,   99,  101, 114, 116, 102, 105, 108, 101, 109, 0,   0,   0,   6, 47,
           99,  46,  112, 101, 109, 100, 0,   6,   118, 101, 114, 105, 102, 121, 97,  0});

// docs/protocol.md §6.3: term_to_binary(#{op => hello, ref => 1}).
const std::string kDocHello =
    bytes({0x83, 0x74, 0x00, 0x00, 0x00, 0x02, 0x64, 0x00, 0x02, 0x6f, 0x70, 0x64, 0x00, 0x05,
           0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x64, 0x00, 0x03, 0x72, 0x65, 0x66, 0x61, 0x01});

}  // namespace

TEST(EtfDecode, ErlangFixtureFromBrief) {
  const json v = decode_ok(kBrief);
  const json expected = {
      {"op", "hello"},
      {"ref", 1},
      {"name", bin("w")},
      {"tls", {{"verify", 2}}},
      // Erlang writes a list of small integers as STRING_EXT: it reads as a string.
      {"list", "\x01\x02\x03"},
      {"s", "str"},
      {"big", std::uint64_t{1} << 62},
      {"neg", -5},
      {"f", 1.5},
  };
  EXPECT_EQ(v, expected) << v.dump();
  EXPECT_TRUE(v["name"].is_binary());
  EXPECT_TRUE(v["f"].is_number_float());
}

TEST(EtfDecode, DocExample) {
  EXPECT_EQ(decode_ok(kDocHello), json({{"op", "hello"}, {"ref", 1}}));
}

TEST(EtfDecode, Utf8AtomsAndSpecialAtoms) {
  const json v = decode_ok(kUtf8Atoms);
  const json expected = {
      {"op", "hello"}, {"ref", 7},     {"ok", true},   {"bad", false},
      {"u", nullptr},  {"n", nullptr}, {"z", nullptr}, {"t", {1, bin("a"), {"x"}}},
  };
  EXPECT_EQ(v, expected) << v.dump();
}

TEST(EtfDecode, AtomEncodings) {
  // ATOM_EXT é (Latin-1 233) as key and value: read as UTF-8 text.
  EXPECT_EQ(decode_ok(bytes({131, 116, 0, 0, 0, 1, 100, 0, 1, 233, 100, 0, 1, 233})),
            json({{"\xc3\xa9", "\xc3\xa9"}}));
  // SMALL_ATOM_UTF8_EXT '日本', as term_to_binary writes it.
  EXPECT_EQ(decode_ok(bytes({131, 119, 6, 230, 151, 165, 230, 156, 172})),
            json("\xe6\x97\xa5\xe6\x9c\xac"));
  // SMALL_ATOM_EXT (115) and ATOM_UTF8_EXT (118).
  EXPECT_EQ(decode_ok(bytes({131, 115, 4, 't', 'r', 'u', 'e'})), json(true));
  EXPECT_EQ(decode_ok(bytes({131, 118, 0, 5, 'f', 'a', 'l', 's', 'e'})), json(false));
  EXPECT_EQ(decode_ok(bytes({131, 118, 0, 3, 'n', 'i', 'l'})), json(nullptr));
  EXPECT_EQ(decode_ok(bytes({131, 115, 2, 'o', 'k'})), json("ok"));
}

TEST(EtfDecode, Integers) {
  const json v = decode_ok(kInts);
  const json expected = {0,
                         255,
                         256,
                         -1,
                         std::numeric_limits<std::int32_t>::min(),
                         std::numeric_limits<std::int32_t>::max(),
                         std::int64_t{2147483648},
                         std::int64_t{-2147483649},
                         std::numeric_limits<std::int64_t>::min(),
                         std::numeric_limits<std::int64_t>::max(),
                         std::numeric_limits<std::uint64_t>::max()};
  EXPECT_EQ(v, expected) << v.dump();
  EXPECT_EQ(v[8].get<std::int64_t>(), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(v[10].get<std::uint64_t>(), std::numeric_limits<std::uint64_t>::max());
  // A LARGE_BIG_EXT holding a small value, and a SMALL_BIG_EXT with zero high bytes.
  EXPECT_EQ(decode_ok(bytes({131, 111, 0, 0, 0, 2, 1, 0, 1})), json(-256));
  EXPECT_EQ(decode_ok(bytes({131, 110, 10, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0})), json(5));
}

TEST(EtfDecode, IntegersBeyond64BitsRejected) {
  // term_to_binary(1 bsl 64) and term_to_binary(-(1 bsl 63) - 1).
  EXPECT_NE(decode_error(bytes({131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})).find("64"),
            std::string::npos);
  EXPECT_NE(decode_error(bytes({131, 110, 8, 1, 1, 0, 0, 0, 0, 0, 0, 128})).find("64"),
            std::string::npos);
}

TEST(EtfDecode, Floats) {
  // term_to_binary(-0.1): NEW_FLOAT_EXT.
  EXPECT_EQ(decode_ok(bytes({131, 70, 191, 185, 153, 153, 153, 153, 153, 154})), json(-0.1));
  // term_to_binary(1.5, [{minor_version, 0}]): FLOAT_EXT.
  const std::string old_float =
      bytes({131, 99, 49, 46, 53, 48, 48, 48,  48, 48, 48, 48, 48, 48, 48, 48, 48,
             48,  48, 48, 48, 48, 48, 48, 101, 43, 48, 48, 0,  0,  0,  0,  0});
  EXPECT_EQ(decode_ok(old_float), json(1.5));
  // NaN has no Erlang form: an error.
  decode_error(bytes({131, 70, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0}));
}

TEST(EtfDecode, MapKeysOfEveryKind) {
  // term_to_binary(#{<<"bin">> => 1, "str" => 2, atom => 3})
  EXPECT_EQ(
      decode_ok(bytes({131, 116, 0,   0,   0,  3, 100, 0, 4, 97, 116, 111, 109, 97,  3,  107, 0,
                       3,   115, 116, 114, 97, 2, 109, 0, 0, 0,  3,   98,  105, 110, 97, 1})),
      json({{"bin", 1}, {"str", 2}, {"atom", 3}}));
  // term_to_binary(#{1 => 2}): an integer key has no JSON form.
  decode_error(bytes({131, 116, 0, 0, 0, 1, 97, 1, 97, 2}));
  // #{a => 1, <<"a">> => 2} would give the key "a" twice.
  EXPECT_NE(decode_error(
                bytes({131, 116, 0, 0, 0, 2, 100, 0, 1, 'a', 97, 1, 109, 0, 0, 0, 1, 'a', 97, 2}))
                .find("duplicate"),
            std::string::npos);
}

TEST(EtfDecode, NestedCommand) {
  EXPECT_EQ(decode_ok(kNested), json({{"op", "listen"},
                                      {"mode", bin("packet:2")},
                                      {"tls", {{"certfile", bin("/c.pem")}, {"verify", 0}}}}));
}

TEST(EtfDecode, ListsAndTuples) {
  EXPECT_EQ(decode_ok(bytes({131, 106})), json::array());
  // [[1, []], {}] : LIST_EXT, NIL_EXT, SMALL_TUPLE_EXT of 0.
  EXPECT_EQ(decode_ok(bytes({131, 108, 0, 0, 0, 2, 108, 0, 0, 0, 2, 97, 1, 106, 106, 104, 0, 106})),
            json({json({1, json::array()}), json::array()}));
  // list_to_tuple(lists:seq(1, 300)): LARGE_TUPLE_EXT.
  std::string big = bytes({131, 105, 0, 0, 1, 44});
  json expected = json::array();
  for (int i = 1; i <= 300; ++i) {
    if (i <= 255) {
      big += bytes({97, i});
    } else {
      big += bytes({98, 0, 0, i >> 8, i & 0xFF});
    }
    expected.push_back(i);
  }
  EXPECT_EQ(decode_ok(big), expected);
}

TEST(EtfDecode, UnsupportedTagsNamed) {
  // term_to_binary(self()), make_ref(), <<1:3>>, lists:duplicate(100, 7) compressed.
  const std::string pid =
      bytes({131, 88,  100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104,
             111, 115, 116, 0, 0,  0,   9,   0,   0,   0,   0,   0,  0,   0,   0});
  EXPECT_NE(decode_error(pid).find("88"), std::string::npos);
  EXPECT_NE(decode_error(pid).find("pid"), std::string::npos);
  const std::string ref =
      bytes({131, 90,  0, 3, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
             115, 116, 0, 0, 0,   0, 0,  3,   240, 102, 101, 196, 0,   2,  110, 124, 77,  188});
  EXPECT_NE(decode_error(ref).find("90"), std::string::npos);
  EXPECT_NE(decode_error(bytes({131, 77, 0, 0, 0, 1, 3, 32})).find("77"), std::string::npos);
  const std::string compressed =
      bytes({131, 80, 0, 0, 0, 103, 120, 156, 203, 102, 72, 97, 167, 3, 0, 0, 220, 254, 3, 140});
  EXPECT_NE(decode_error(compressed).find("80"), std::string::npos);
  // A pid inside a map is just as unsupported.
  EXPECT_NE(decode_error(bytes({131, 116, 0, 0, 0, 1, 100, 0, 1, 'p'}) + pid.substr(1)).find("88"),
            std::string::npos);
}

TEST(EtfDecode, MalformedInput) {
  decode_error("");
  EXPECT_NE(decode_error(bytes({130, 97, 1})).find("version"), std::string::npos);
  EXPECT_NE(decode_error(bytes({97, 1})).find("version"), std::string::npos);
  // term_to_binary([1|2])
  EXPECT_NE(decode_error(bytes({131, 108, 0, 0, 0, 1, 97, 1, 97, 2})).find("improper"),
            std::string::npos);
  EXPECT_NE(decode_error(kDocHello + bytes({0})).find("trailing"), std::string::npos);
  EXPECT_NE(decode_error(bytes({131, 97, 1, 97, 2})).find("trailing"), std::string::npos);
  decode_error(bytes({131}));
}

TEST(EtfDecode, TruncatedAtEveryPosition) {
  for (const std::string* fixture : {&kBrief, &kUtf8Atoms, &kInts, &kNested, &kDocHello}) {
    decode_ok(*fixture);
    for (std::size_t len = 0; len < fixture->size(); ++len) {
      json out;
      std::string error;
      EXPECT_FALSE(etf::decode(fixture->substr(0, len), out, error)) << "prefix " << len;
      EXPECT_FALSE(error.empty());
    }
  }
}

TEST(EtfDecode, HugeCountsFailWithoutAllocating) {
  // Each claims up to 4 billion elements or bytes in a few bytes of input; an
  // attempt to reserve for them would throw or exhaust memory.
  const std::string huge[] = {
      bytes({131, 108, 0xff, 0xff, 0xff, 0xff, 97, 1, 106}),           // LIST_EXT
      bytes({131, 116, 0xff, 0xff, 0xff, 0xff, 97, 1, 97}),            // MAP_EXT
      bytes({131, 105, 0xff, 0xff, 0xff, 0xff, 97, 1}),                // LARGE_TUPLE_EXT
      bytes({131, 109, 0xff, 0xff, 0xff, 0xff, 1, 2}),                 // BINARY_EXT
      bytes({131, 107, 0xff, 0xff, 1, 2, 3}),                          // STRING_EXT
      bytes({131, 111, 0xff, 0xff, 0xff, 0xff, 0, 1}),                 // LARGE_BIG_EXT
      bytes({131, 118, 0xff, 0xff, 'a'}),                              // ATOM_UTF8_EXT
      bytes({131, 104, 0xff, 97, 1}),                                  // SMALL_TUPLE_EXT
      bytes({131, 116, 0, 0, 0, 1, 109, 0xff, 0xff, 0xff, 0xff, 97}),  // binary key
  };
  for (const auto& in : huge) {
    json out;
    std::string error;
    EXPECT_FALSE(etf::decode(in, out, error));
    EXPECT_FALSE(error.empty());
  }
  // The lengths themselves are named.
  json out;
  std::string error;
  EXPECT_FALSE(etf::decode(huge[0], out, error));
  EXPECT_NE(error.find("exceeds"), std::string::npos) << error;
}

namespace {

/// `depth` nested one-element lists around an empty list.
std::string nested_lists(int depth) {
  std::string s = bytes({131});
  for (int i = 0; i < depth; ++i) s += bytes({108, 0, 0, 0, 1});
  s += bytes({106});
  for (int i = 0; i < depth; ++i) s += bytes({106});
  return s;
}

}  // namespace

TEST(EtfDecode, DepthCapped) {
  std::string error;
  json out;
  EXPECT_FALSE(etf::decode(nested_lists(100), out, error));
  EXPECT_NE(error.find("deep"), std::string::npos) << error;
  // kMaxDepth containers are fine; one more is not.
  EXPECT_TRUE(etf::decode(nested_lists(etf::kMaxDepth), out, error)) << error;
  EXPECT_FALSE(etf::decode(nested_lists(etf::kMaxDepth + 1), out, error));
  // Maps count as well.
  std::string maps = bytes({131});
  for (int i = 0; i < 100; ++i) maps += bytes({116, 0, 0, 0, 1, 100, 0, 1, 'k'});
  maps += bytes({106});
  EXPECT_FALSE(etf::decode(maps, out, error));
}

TEST(EtfDecode, RandomMutationsNeverCrash) {
  // Flip, drop and insert bytes of good terms: any outcome but a crash is fine
  // (run under ASan/UBSan to make this meaningful).
  std::mt19937 rng(7);
  const std::string* fixtures[] = {&kBrief, &kUtf8Atoms, &kInts, &kNested};
  for (int round = 0; round < 20000; ++round) {
    std::string s = *fixtures[round % 4];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const std::size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[at] = static_cast<char>(rng() & 0xFF);
          break;
        case 1:
          s.erase(at, 1);
          break;
        default:
          s.insert(at, 1, static_cast<char>(rng() & 0xFF));
          break;
      }
    }
    json out;
    std::string error;
    if (!etf::decode(s, out, error)) {
      ASSERT_FALSE(error.empty());
    }
  }
}

TEST(EtfEncode, ExactBytes) {
  // Atom keys as SMALL_ATOM_UTF8_EXT (0x77), strings as BINARY_EXT (0x6d).
  EXPECT_EQ(encode({{"op", "hello"}, {"ref", 1}}),
            bytes({0x83, 0x74, 0,   0,   0,   2,   0x77, 2, 'o', 'p', 0x6d, 0,    0, 0,
                   5,    'h',  'e', 'l', 'l', 'o', 0x77, 3, 'r', 'e', 'f',  0x61, 1}));
  EXPECT_EQ(encode(json::array()), bytes({131, 106}));
  EXPECT_EQ(encode({1, 2}), bytes({131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 106}));
  EXPECT_EQ(encode(nullptr), bytes({131, 119, 9, 'u', 'n', 'd', 'e', 'f', 'i', 'n', 'e', 'd'}));
  EXPECT_EQ(encode(true), bytes({131, 119, 4, 't', 'r', 'u', 'e'}));
  EXPECT_EQ(encode(bin(std::string("\0\xff", 2))), bytes({131, 109, 0, 0, 0, 2, 0, 255}));
  EXPECT_EQ(encode(255), bytes({131, 97, 255}));
  EXPECT_EQ(encode(256), bytes({131, 98, 0, 0, 1, 0}));
  EXPECT_EQ(encode(-1), bytes({131, 98, 255, 255, 255, 255}));
  EXPECT_EQ(encode(std::int64_t{2147483648}), bytes({131, 110, 4, 0, 0, 0, 0, 128}));
  EXPECT_EQ(encode(std::int64_t{-2147483649}), bytes({131, 110, 4, 1, 1, 0, 0, 128}));
  EXPECT_EQ(encode(std::numeric_limits<std::int64_t>::min()),
            bytes({131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128}));
  EXPECT_EQ(encode(std::numeric_limits<std::uint64_t>::max()),
            bytes({131, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 255}));
  EXPECT_EQ(encode(-0.1), bytes({131, 70, 191, 185, 153, 153, 153, 153, 153, 154}));
  // A 300-byte key of 150 characters is an ATOM_UTF8_EXT.
  std::string key;
  for (int i = 0; i < 150; ++i) key += "\xc3\xa9";
  EXPECT_EQ(encode({{key, 1}}).substr(0, 9), bytes({131, 116, 0, 0, 0, 1, 118, 1, 44}));
  // Keys no atom can hold go as binaries: over 255 characters, or not UTF-8.
  EXPECT_EQ(encode({{std::string(256, 'k'), 1}}).substr(0, 11),
            bytes({131, 116, 0, 0, 0, 1, 109, 0, 0, 1, 0}));
  EXPECT_EQ(encode({{"\xff", 1}}), bytes({131, 116, 0, 0, 0, 1, 109, 0, 0, 0, 1, 255, 97, 1}));
  // Erlang has no NaN: written as undefined, as JSON would write null.
  EXPECT_EQ(decode_ok(encode(std::numeric_limits<double>::quiet_NaN())), json(nullptr));
}

TEST(EtfEncode, Appends) {
  std::string out = "ab";
  etf::encode(1, out);
  EXPECT_EQ(out, bytes({'a', 'b', 131, 97, 1}));
}

TEST(EtfEncode, RoundTrips) {
  // Strings come back as binaries (both are BINARY_EXT); everything else as is.
  const json values[] = {
      json(0),
      json(255),
      json(256),
      json(-1),
      json(std::numeric_limits<std::int32_t>::min()),
      json(std::numeric_limits<std::int32_t>::max()),
      json(std::int64_t{1} << 40),
      json(-(std::int64_t{1} << 40)),
      json(std::numeric_limits<std::int64_t>::min()),
      json(std::numeric_limits<std::int64_t>::max()),
      json(std::numeric_limits<std::uint64_t>::max()),
      json(1.5),
      json(-0.0),
      json(1e300),
      json(true),
      json(false),
      json(nullptr),
      json::array(),
      json::object(),
      json({1, {2, {3, json::array()}}, true}),
      json({{"a", {{"b", {{"c", json::array()}}}}}, {"ok", true}, {"n", nullptr}}),
      bin(""),
      bin(std::string("\0\1\2\xff", 4)),
  };
  for (const auto& v : values) {
    EXPECT_EQ(decode_ok(encode(v)), v) << v.dump();
  }
  EXPECT_EQ(decode_ok(encode("hello")), bin("hello"));
  EXPECT_EQ(decode_ok(encode({{"s", ""}})), json({{"s", bin("")}}));
}

namespace {

/// Erlang binary syntax for bytes: <<131,116,...>>.
std::string erlang_binary(const std::string& b) {
  std::string out = "<<";
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(static_cast<std::uint8_t>(b[i]));
  }
  return out + ">>";
}

}  // namespace

TEST(EtfEncode, RealErlangDecodesWhatWeWrite) {
  if (std::system("command -v erl >/dev/null 2>&1") != 0) GTEST_SKIP() << "erl not on PATH";

  std::string long_key;  // 200 characters, 400 bytes: ATOM_UTF8_EXT
  for (int i = 0; i < 200; ++i) long_key += "\xc3\xa9";
  // Our JSON value, and the Erlang term binary_to_term must give for it.
  const std::pair<json, std::string> cases[] = {
      {json({{"op", "hello"}, {"ref", 1}}), "#{op => <<\"hello\">>, ref => 1}"},
      {json({{"ok", true},
             {"bad", false},
             {"nothing", nullptr},
             {"list", {1, "a", json::array(), {2}}},
             {"data", bin(std::string("\0\xff", 2))},
             {"peer", {{"host", "127.0.0.1"}, {"port", 4433}}}}),
       "#{ok => true, bad => false, nothing => undefined, list => [1, <<\"a\">>, [], [2]],"
       " data => <<0,255>>, peer => #{host => <<\"127.0.0.1\">>, port => 4433}}"},
      {json({0, 255, 256, -1, std::numeric_limits<std::int32_t>::min(),
             std::numeric_limits<std::int32_t>::max(), std::int64_t{2147483648},
             std::int64_t{-2147483649}, std::numeric_limits<std::int64_t>::min(),
             std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::uint64_t>::max()}),
       "[0, 255, 256, -1, -2147483648, 2147483647, 2147483648, -2147483649,"
       " -(1 bsl 63), (1 bsl 63) - 1, (1 bsl 64) - 1]"},
      {json({1.5, -0.1, 1e300}), "[1.5, -0.1, 1.0e300]"},
      {json({{"\xc3\xa9", "\xc3\xa9"}}), "#{list_to_atom([233]) => <<\"\\x{e9}\"/utf8>>}"},
      {json({{long_key, 1}}), "#{list_to_atom(lists:duplicate(200, 233)) => 1}"},
      {json({{std::string(300, 'k'), 1}}), "#{list_to_binary(lists:duplicate(300, $k)) => 1}"},
      {json({{"\xff", 1}}), "#{<<255>> => 1}"},
      {json::object(), "#{}"},
      {json::array(), "[]"},
  };

  // One Erlang node checks every case: "N true" per case.
  const std::string script = testing::TempDir() + "etf_check.erl";
  {
    std::ofstream f(script);
    for (std::size_t i = 0; i < std::size(cases); ++i) {
      f << "io:format(\"~w ~w~n\", [" << i << ", binary_to_term("
        << erlang_binary(encode(cases[i].first)) << ") =:= (" << cases[i].second << ")]),\n";
    }
    f << "ok.\n";
  }
  const std::string command =
      "timeout 120 erl -noshell -eval 'try file:script(\"" + script +
      "\") of R -> io:format(\"result ~p~n\", [R]) catch C:E -> io:format(\"crash ~p:~p~n\", "
      "[C, E]) end, halt().' 2>&1";
  FILE* p = popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) output += buf;
  pclose(p);
  std::remove(script.c_str());
  output.insert(0, "\n");
  for (std::size_t i = 0; i < std::size(cases); ++i) {
    EXPECT_NE(output.find("\n" + std::to_string(i) + " true\n"), std::string::npos)
        << "case " << i << ": " << cases[i].second << "\n"
        << output;
  }
  EXPECT_NE(output.find("result {ok,ok}"), std::string::npos) << output;
}

TEST(EtfDecode, TooManyTermsFail) {
  // A list of 70000 small integers: 2 bytes each, far below the frame cap,
  // but past the term cap.
  std::string in = "\x83\x6c";
  const std::uint32_t n = 70000;
  for (int shift = 24; shift >= 0; shift -= 8) in.push_back(static_cast<char>((n >> shift) & 0xff));
  for (std::uint32_t i = 0; i < n; ++i) in += std::string("\x61\x01", 2);
  in.push_back('\x6a');
  nlohmann::json out;
  std::string error;
  EXPECT_FALSE(tlsport::protocol::etf::decode(in, out, error));
  EXPECT_NE(error.find("terms"), std::string::npos) << error;
}
