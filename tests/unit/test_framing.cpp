// Unit tests of protocol/framing: names, headers, errors and the Deframer.
// The Deframer tests follow Beast's "parsegrind" idea: every message is fed
// whole, split in two at every byte, one byte at a time and in random pieces,
// under three flow-control styles, and must always yield the same outcome.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/framing.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace tlsport::protocol {
namespace {

using namespace std::string_literals;

/// Deterministic, varied bytes (all 256 values occur), so offset bugs show.
std::string pattern(std::size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((i * 7 + seed * 13 + i / 251) & 0xFF);
  return s;
}

/// Framing from its name; fails the test if the name does not parse.
Framing framing(std::string_view name) {
  const auto f = parse_framing(name);
  EXPECT_TRUE(f.has_value()) << name;
  return f.value_or(Framing{});
}

/// Header + payload for each payload, concatenated.
std::string frame_all(const Framing& f, const std::vector<std::string>& payloads) {
  std::string wire;
  for (const auto& p : payloads) {
    std::uint8_t h[4];
    const auto n = encode_header(f, p.size(), h);
    EXPECT_TRUE(n.has_value()) << p.size();
    wire.append(reinterpret_cast<const char*>(h), n.value_or(0));
    wire += p;
  }
  return wire;
}

/// Packet-mode header for `n` bytes, big-endian, not checked against anything.
std::string raw_header(unsigned bytes, std::uint64_t n) {
  std::string h;
  for (unsigned i = 0; i < bytes; ++i) h += static_cast<char>(n >> (8 * (bytes - 1 - i)));
  return h;
}

/// What a deframer made of a message: packets, the error, bytes left held.
struct Outcome {
  std::vector<std::string> packets;  ///< packets in order
  std::error_code error;             ///< first error, if any
  std::size_t held = 0;              ///< buffered() at the end

  bool operator==(const Outcome& o) const {
    return packets == o.packets && error == o.error && held == o.held;
  }
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  os << o.packets.size() << " packets [";
  for (const auto& p : o.packets) os << p.size() << ' ';
  return os << "] error=" << o.error.message() << " held=" << o.held;
}

/// How the consumer drives flow control.
enum class Flow {
  go,           ///< on_packet always returns true
  stop_resume,  ///< stops after each packet, resumes with feed("") while has_packet()
  stop_feed,    ///< stops after each packet, yet keeps feeding; drains at the end
};

const char* flow_name(Flow f) {
  switch (f) {
    case Flow::go:
      return "go";
    case Flow::stop_resume:
      return "stop_resume";
    case Flow::stop_feed:
      return "stop_feed";
  }
  return "?";
}

/// Feeds `pieces` in order. Each piece is fed from its own copy, scribbled over
/// right after the feed, so a deframer keeping views of old input is caught.
Outcome run(const Framing& f, std::size_t cap, const std::vector<std::string_view>& pieces,
            Flow flow) {
  Deframer d(f, cap);
  Outcome out;
  const bool stop = flow != Flow::go;
  auto on_packet = [&](std::string_view p) {
    out.packets.emplace_back(p);
    return !stop;
  };
  // Resumes while whole packets are held, checking one packet per resume.
  auto drain = [&]() -> std::error_code {
    while (d.has_packet()) {
      const std::size_t before = out.packets.size();
      if (auto e = d.feed("", on_packet)) return e;
      EXPECT_EQ(out.packets.size(), before + 1);
      if (out.packets.size() != before + 1) return {};
    }
    return {};
  };
  for (const auto piece : pieces) {
    std::string copy(piece);
    const std::size_t before = out.packets.size();
    std::error_code e = d.feed(copy, on_packet);
    std::fill(copy.begin(), copy.end(), '\xEE');
    if (stop) {
      EXPECT_LE(out.packets.size(), before + 1) << "a stop was not honoured";
    }
    if (!e && flow == Flow::stop_resume) e = drain();
    if (e) {
      out.error = e;
      out.held = d.buffered();
      return out;
    }
  }
  if (auto e = drain()) out.error = e;
  EXPECT_FALSE(d.has_packet());
  out.held = d.buffered();
  return out;
}

/// A message to grind: its bytes and what deframing them must give.
struct Case {
  std::string name;                   ///< test name suffix
  std::string mode;                   ///< framing name
  std::size_t cap;                    ///< max_packet
  std::string wire;                   ///< the message
  std::vector<std::string> expected;  ///< packets (ignored for raw)
  std::error_code error = {};         ///< expected error
  std::size_t held = 0;               ///< expected buffered() at the end
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

class Grind : public ::testing::TestWithParam<Case> {
 protected:
  /// Expected outcome for these pieces: raw hands out the non-empty pieces.
  Outcome expect(const std::vector<std::string_view>& pieces) const {
    const Case& c = GetParam();
    Outcome o{c.expected, c.error, c.held};
    if (framing(c.mode).kind == FramingKind::raw) {
      o.packets.clear();
      for (auto p : pieces) {
        if (!p.empty()) o.packets.emplace_back(p);
      }
    }
    return o;
  }

  /// Runs the pieces under every flow style and compares.
  void check(const std::vector<std::string_view>& pieces, const std::string& how) const {
    const Case& c = GetParam();
    const Outcome want = expect(pieces);
    for (Flow flow : {Flow::go, Flow::stop_resume, Flow::stop_feed}) {
      const Outcome got = run(framing(c.mode), c.cap, pieces, flow);
      ASSERT_EQ(got, want) << how << ", flow " << flow_name(flow);
    }
  }
};

TEST_P(Grind, Whole) { check({GetParam().wire}, "whole"); }

TEST_P(Grind, SplitAtEveryByte) {
  const std::string_view w = GetParam().wire;
  for (std::size_t i = 0; i <= w.size(); ++i) {
    check({w.substr(0, i), w.substr(i)}, "split at " + std::to_string(i));
    if (HasFatalFailure()) return;
  }
}

TEST_P(Grind, OneByteAtATime) {
  const std::string_view w = GetParam().wire;
  std::vector<std::string_view> pieces;
  for (std::size_t i = 0; i < w.size(); ++i) pieces.push_back(w.substr(i, 1));
  check(pieces, "bytewise");
}

TEST_P(Grind, RandomPieces) {
  const std::string_view w = GetParam().wire;
  std::mt19937 rng(12345);
  for (int round = 0; round < 100; ++round) {
    std::vector<std::string_view> pieces;
    std::size_t at = 0;
    while (at < w.size()) {
      // Mostly short pieces, sometimes empty ones (feed("") mid-stream).
      const std::size_t n = std::min<std::size_t>(rng() % 40, w.size() - at);
      pieces.push_back(w.substr(at, n));
      at += n;
    }
    check(pieces, "random round " + std::to_string(round));
    if (HasFatalFailure()) return;
  }
}

/// A BER TLV from identifier bytes and contents, with a definite short or long length.
std::string tlv(std::string tag, const std::string& contents) {
  std::string s = std::move(tag);
  const std::size_t n = contents.size();
  if (n < 0x80) {
    s += static_cast<char>(n);
  } else {
    std::string len;
    for (std::size_t v = n; v != 0; v >>= 8) len.insert(len.begin(), static_cast<char>(v & 0xFF));
    s += static_cast<char>(0x80 | len.size());
    s += len;
  }
  return s + contents;
}

/// A constructed BER element with indefinite length around `contents`.
std::string indefinite(std::string tag, const std::string& contents) {
  return tag + "\x80"s + contents + "\0\0"s;
}

std::vector<std::string> asn1_packets() {
  return {
      tlv("\x02", "\x05"),                                          // INTEGER 5
      tlv("\x05", ""),                                              // NULL: empty contents
      tlv("\x5F\x81\x01", "high tag"),                              // [APPLICATION 129]
      tlv("\x04", pattern(300)),                                    // long form, 2 length bytes
      indefinite("\x30", tlv("\x04", "ab") + tlv("\x01", "\xFF")),  // SEQUENCE, indefinite
      indefinite("\x30",
                 indefinite("\x31", tlv("\x04", "x") + indefinite("\x24", tlv("\x04", "y"))) +
                     tlv("\x30", indefinite("\x30", tlv("\x02", "\x01")))),
      tlv("\x30",
          indefinite("\x30", tlv("\x04", "inner")) + tlv("\x05", "")),  // indefinite in definite
      "\x04\x84\x00\x00\x00\x03xyz"s,                                   // padded long form
      tlv("\x1F\x81\x82\x83\x04", "four tag bytes"),
  };
}

std::string concat(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

std::vector<std::string> with_newlines(std::vector<std::string> lines) {
  for (auto& l : lines) l += '\n';
  return lines;
}

std::vector<Case> grind_cases() {
  std::vector<Case> cases;
  auto add_packet = [&](std::string name, std::string mode, std::size_t cap,
                        std::vector<std::string> payloads) {
    const std::string wire = frame_all(framing(mode), payloads);
    cases.push_back({std::move(name), std::move(mode), cap, wire, std::move(payloads)});
  };
  add_packet("packet1", "packet:1", 255, {"", "a", "hello", pattern(255), "\n\r\0"s, ""});
  add_packet("packet2", "packet:2", 1000, {"abc", "", pattern(300, 2), pattern(1000, 3), "z"});
  add_packet("packet4", "packet:4", 300, {pattern(70, 4), "", "xyz", pattern(300, 5), ""});
  add_packet("binary_packet2", "binary_packet:2", 400, {"", pattern(257, 6), "q", ""});
  add_packet("empty_packets4", "packet:4", 0, {"", "", ""});

  const auto ber = asn1_packets();
  cases.push_back({"asn1", "asn1", 4096, concat(ber), ber});
  const std::string biggest = tlv("\x04", pattern(500, 7));
  cases.push_back({"asn1_exact_cap", "asn1", biggest.size(), concat(ber) + biggest, [&] {
                     auto v = ber;
                     v.push_back(biggest);
                     return v;
                   }()});

  const auto lines = with_newlines(
      {"hello", "", "a line with\ttabs and \r", std::string(63, 'L'), "\0binary\xFF"s, "last"});
  cases.push_back({"line", "line", 64, concat(lines), lines});

  cases.push_back({"raw", "raw", 16, pattern(200, 8), {}});

  // Errors and truncations must be split-invariant too: same packets before
  // the error, the same error, the same bytes held.
  const auto too_large = make_error_code(FramingError::packet_too_large);
  const auto bad = make_error_code(FramingError::ber_bad_encoding);
  const auto deep = make_error_code(FramingError::ber_too_deep);
  {
    const Framing f = framing("packet:2");
    cases.push_back({"packet2_over_cap",
                     "packet:2",
                     100,
                     frame_all(f, {"ok", ""}) + raw_header(2, 101) + pattern(101),
                     {"ok", ""},
                     too_large});
    cases.push_back({"packet4_truncated",
                     "packet:4",
                     100,
                     frame_all(framing("packet:4"), {"abc"}) + raw_header(4, 10) + "12345",
                     {"abc"},
                     {},
                     9});
    cases.push_back(
        {"packet4_truncated_header", "packet:4", 100, frame_all(f, {}) + "\0\0"s, {}, {}, 2});
  }
  cases.push_back({"line_too_long", "line", 16, "short\nthis line is far too long\nx\n",
                   with_newlines({"short"}), too_large});
  cases.push_back({"line_exactly_cap_without_newline", "line", 8, "1234567\n12345678",
                   with_newlines({"1234567"}), too_large});
  cases.push_back({"line_truncated", "line", 64, "abc\npartial", with_newlines({"abc"}), {}, 7});
  cases.push_back({"asn1_bad_ff", "asn1", 4096, concat(ber) + "\x04\xFF\x00"s, ber, bad});
  cases.push_back({"asn1_primitive_indefinite",
                   "asn1",
                   4096,
                   tlv("\x05", "") + "\x04\x80\x00\x00"s,
                   {tlv("\x05", "")},
                   bad});
  cases.push_back({"asn1_over_cap",
                   "asn1",
                   64,
                   tlv("\x02", "\x01") + "\x04\x82\x01\x00"s + pattern(256),
                   {tlv("\x02", "\x01")},
                   too_large});
  {
    std::string deep_msg;
    for (int i = 0; i < 65; ++i) deep_msg += "\x30\x80";
    cases.push_back({"asn1_too_deep",
                     "asn1",
                     4096,
                     tlv("\x05", "") + deep_msg + "\0\0"s,
                     {tlv("\x05", "")},
                     deep});
  }
  {
    const std::string cut = indefinite("\x30", tlv("\x04", "ab")).substr(0, 6);
    cases.push_back(
        {"asn1_truncated", "asn1", 4096, tlv("\x05", "") + cut, {tlv("\x05", "")}, {}, cut.size()});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Deframer, Grind, ::testing::ValuesIn(grind_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

// --- zero copy -------------------------------------------------------------

/// True when `v` lies wholly inside `buf`.
bool points_into(std::string_view v, std::string_view buf) {
  return v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size();
}

TEST(Deframer, WholePacketsAreViewsOfTheInput) {
  const Framing f = framing("packet:2");
  const std::string wire = frame_all(f, {"one", "two", pattern(100)});
  Deframer d(f, 1000);
  int n = 0;
  ASSERT_FALSE(d.feed(wire, [&](std::string_view p) {
    EXPECT_TRUE(points_into(p, wire));
    ++n;
    return true;
  }));
  EXPECT_EQ(n, 3);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(Deframer, OnlyTheSplitPacketIsCopied) {
  const Framing f = framing("asn1");
  const std::string wire = tlv("\x04", "first") + tlv("\x04", "second") + tlv("\x04", "third");
  const std::size_t cut = tlv("\x04", "first").size() + 3;  // inside "second"
  const std::string a = wire.substr(0, cut);
  const std::string b = wire.substr(cut);
  Deframer d(f, 100);
  std::vector<bool> from_input;
  ASSERT_FALSE(d.feed(a, [&](std::string_view p) {
    from_input.push_back(points_into(p, a));
    return true;
  }));
  ASSERT_FALSE(d.feed(b, [&](std::string_view p) {
    from_input.push_back(points_into(p, b));
    return true;
  }));
  // first: in `a`; second: assembled in the buffer; third: in `b` again.
  EXPECT_EQ(from_input, (std::vector<bool>{true, false, true}));
}

TEST(Deframer, RawHandsTheChunkThroughUnchanged) {
  Deframer d(framing("raw"), 4);  // the cap does not apply to raw chunks
  const std::string chunk = pattern(100);
  int calls = 0;
  auto on = [&](std::string_view p) {
    ++calls;
    EXPECT_EQ(p.data(), chunk.data());
    EXPECT_EQ(p.size(), chunk.size());
    return false;  // nothing is left to hold in raw mode
  };
  ASSERT_FALSE(d.feed(chunk, on));
  ASSERT_FALSE(d.feed("", on));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_FALSE(d.has_packet());
}

// --- flow control ----------------------------------------------------------

TEST(Deframer, StopKeepsACopyOfTheRest) {
  const Framing f = framing("packet:1");
  std::string input = frame_all(f, {"a", "bb", "ccc"});
  Deframer d(f, 255);
  std::vector<std::string> got;
  auto stop = [&](std::string_view p) {
    got.emplace_back(p);
    return false;
  };
  ASSERT_FALSE(d.feed(input, stop));
  EXPECT_EQ(got, (std::vector<std::string>{"a"}));
  EXPECT_EQ(d.buffered(), input.size() - 2);
  EXPECT_TRUE(d.has_packet());
  // The caller may reuse its input buffer at once.
  std::fill(input.begin(), input.end(), '\x7F');
  ASSERT_FALSE(d.feed("", stop));
  ASSERT_FALSE(d.feed("", stop));
  EXPECT_FALSE(d.has_packet());
  ASSERT_FALSE(d.feed("", stop));  // nothing left: no call
  EXPECT_EQ(got, (std::vector<std::string>{"a", "bb", "ccc"}));
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(Deframer, HasPacketIsFalseForAnIncompletePacket) {
  const Framing f = framing("packet:2");
  Deframer d(f, 100);
  const std::string wire = frame_all(f, {"done", "next", "partial"});
  std::vector<std::string> got;
  auto on = [&](std::string_view p) {
    got.emplace_back(p);
    return false;
  };
  ASSERT_FALSE(d.feed(std::string_view(wire).substr(0, wire.size() - 1), on));
  EXPECT_TRUE(d.has_packet());  // "next" is whole
  ASSERT_FALSE(d.feed("", on));
  EXPECT_FALSE(d.has_packet());  // "partial" lacks a byte
  ASSERT_FALSE(d.feed("", on));
  EXPECT_EQ(got, (std::vector<std::string>{"done", "next"}));
  EXPECT_EQ(d.buffered(), 2u + 6u);
}

TEST(Deframer, ErrorIsStickyAndFreesTheBuffer) {
  const Framing f = framing("packet:1");
  Deframer d(f, 3);
  int calls = 0;
  auto on = [&](std::string_view) {
    ++calls;
    return true;
  };
  ASSERT_FALSE(d.feed("\x02", on));
  EXPECT_EQ(d.buffered(), 1u);
  // The held packet is fine, the next header is over the cap.
  const auto e = d.feed("ab\x04", on);
  EXPECT_EQ(e, FramingError::packet_too_large);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_FALSE(d.has_packet());
  EXPECT_EQ(d.feed("\x01x", on), FramingError::packet_too_large);
  EXPECT_EQ(calls, 1);
}

TEST(Deframer, HasPacketReportsAHeldErrorSoTheCallerResumes) {
  const Framing f = framing("packet:1");
  Deframer d(f, 3);
  ASSERT_FALSE(d.feed("\x01x\x09", [](std::string_view) { return false; }));
  EXPECT_TRUE(d.has_packet());
  EXPECT_EQ(d.feed("", [](std::string_view) { return true; }), FramingError::packet_too_large);
}

// --- caps and sizes --------------------------------------------------------

TEST(Deframer, OverCapHeaderFailsAtOnceWithNothingBuffered) {
  const std::size_t cap = 64u << 20;
  for (const auto& header : {"\xFF\xFF\xFF\xFF"s, raw_header(4, cap + 1)}) {
    Deframer d(framing("packet:4"), cap);
    EXPECT_EQ(d.feed(header, [](std::string_view) { return true; }),
              FramingError::packet_too_large);
    EXPECT_EQ(d.buffered(), 0u);
  }
  // Byte by byte: nothing beyond the header bytes is ever held.
  Deframer d(framing("packet:4"), cap);
  std::error_code e;
  for (char c : "\xFF\xFF\xFF\xFF"s) {
    EXPECT_LE(d.buffered(), 3u);
    e = d.feed(std::string_view(&c, 1), [](std::string_view) { return true; });
  }
  EXPECT_EQ(e, FramingError::packet_too_large);
}

TEST(Deframer, ExactCapIsAccepted) {
  for (const char* mode : {"packet:1", "packet:2", "packet:4"}) {
    const Framing f = framing(mode);
    const std::size_t cap = f.header_bytes == 1 ? 255 : 777;
    Deframer d(f, cap);
    std::vector<std::string> got;
    const auto e = d.feed(frame_all(f, {pattern(cap), ""}), [&](std::string_view p) {
      got.emplace_back(p);
      return true;
    });
    EXPECT_FALSE(e) << mode;
    EXPECT_EQ(got, (std::vector<std::string>{pattern(cap), ""})) << mode;

    Deframer over(f, cap - 1);
    EXPECT_EQ(over.feed(frame_all(f, {pattern(cap)}), [](std::string_view) { return true; }),
              FramingError::packet_too_large)
        << mode;
  }
}

TEST(Deframer, LineCapCountsTheNewline) {
  auto outcome = [](std::size_t cap, std::string_view in) {
    return run(framing("line"), cap, {in}, Flow::go);
  };
  EXPECT_EQ(outcome(4, "abc\n").packets, (std::vector<std::string>{"abc\n"}));
  EXPECT_EQ(outcome(4, "abcd\n").error, FramingError::packet_too_large);
  EXPECT_EQ(outcome(4, "abcd").error, FramingError::packet_too_large);  // before any '\n'
  EXPECT_FALSE(outcome(4, "abc").error);                                // may still end in '\n'
  EXPECT_EQ(outcome(0, "\n").error, FramingError::packet_too_large);
}

TEST(Deframer, EmptyPacketInPacketModes) {
  for (const char* mode : {"packet:1", "packet:2", "packet:4"}) {
    const Framing f = framing(mode);
    Deframer d(f, 0);
    std::vector<std::string> got;
    ASSERT_FALSE(d.feed(std::string(f.header_bytes, '\0'), [&](std::string_view p) {
      got.emplace_back(p);
      return true;
    }));
    EXPECT_EQ(got, (std::vector<std::string>{""})) << mode;
  }
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
/// Heap bytes in use (main arena plus mmapped blocks), from glibc.
std::size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}
#else
std::size_t heap_in_use() { return 0; }
#endif

/// True when heap_in_use() sees a 1 MiB allocation (not so under some sanitizers).
bool heap_statistics_work() {
  const std::size_t before = heap_in_use();
  const std::string probe(1u << 20, 'h');
  return heap_in_use() >= before + (1u << 20) && probe[0] == 'h';
}

TEST(Deframer, OverCapHeaderAllocatesNothing) {
  if (!heap_statistics_work()) GTEST_SKIP() << "no heap statistics here";
  Deframer d(framing("packet:4"), 64u << 20);
  const std::size_t before = heap_in_use();
  EXPECT_EQ(d.feed("\xFF\xFF\xFF\xFF", [](std::string_view) { return true; }),
            FramingError::packet_too_large);
  EXPECT_LT(heap_in_use(), before + 4096);
}

TEST(Deframer, SplitPacketIsReservedBoundedAndReleasedWhenOut) {
  if (!heap_statistics_work()) GTEST_SKIP() << "no heap statistics here";
  const Framing f = framing("packet:4");
  const std::string wire = frame_all(f, {pattern(4u << 20)});
  const std::size_t half = wire.size() / 2;
  Deframer d(f, 8u << 20);
  const std::size_t before = heap_in_use();
  std::size_t got = 0;
  auto on = [&](std::string_view p) {
    got = p.size();
    return true;
  };
  ASSERT_FALSE(d.feed(std::string_view(wire).substr(0, half), on));
  EXPECT_EQ(d.buffered(), half);
  // What is held is at most the bytes that came plus a bounded reserve: a
  // header announcing 4 MiB does not pin 4 MiB before the data is there.
  EXPECT_GE(heap_in_use(), before + half);
  EXPECT_LT(heap_in_use(), before + 2 * half + (128u << 10));
  ASSERT_FALSE(d.feed(std::string_view(wire).substr(half), on));
  EXPECT_EQ(got, 4u << 20);
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_LT(heap_in_use(), before + 64 * 1024) << "an idle deframer still holds its buffer";
}

// --- names and headers -----------------------------------------------------

TEST(Framing, ParsesEveryName) {
  struct Row {
    const char* name;
    FramingKind kind;
    unsigned header;
    bool binary;
  };
  const Row rows[] = {
      {"raw", FramingKind::raw, 0, false},
      {"packet:0", FramingKind::raw, 0, false},
      {"packet:1", FramingKind::packet, 1, false},
      {"packet:2", FramingKind::packet, 2, false},
      {"packet:4", FramingKind::packet, 4, false},
      {"binary_packet:0", FramingKind::raw, 0, true},
      {"binary_packet:1", FramingKind::packet, 1, true},
      {"binary_packet:4", FramingKind::packet, 4, true},
      {"onebyte", FramingKind::packet, 1, false},
      {"twobytes", FramingKind::packet, 2, false},
      {"fourbytes", FramingKind::packet, 4, false},
      {"asn1", FramingKind::asn1, 0, false},
      {"line", FramingKind::line, 0, false},
      {"{packet,0}", FramingKind::raw, 0, false},
      {"{packet,2}", FramingKind::packet, 2, false},
      {"{binary_packet,4}", FramingKind::packet, 4, true},
  };
  for (const Row& r : rows) {
    const auto f = parse_framing(r.name);
    ASSERT_TRUE(f.has_value()) << r.name;
    EXPECT_EQ(*f, (Framing{r.kind, r.header, r.binary})) << r.name;
  }
}

TEST(Framing, RejectsOtherNames) {
  for (const char* name :
       {"", "packet", "packet:", "packet:3", "packet:8", "packet:22", "packet:-1", "Packet:2",
        "binary_packet", "{packet,3}", "{packet,2", "packet,2}", "{packet, 2}", "{raw}", "asn2",
        " raw", "raw ", "lines", "{binary_packet:2}"}) {
    EXPECT_FALSE(parse_framing(name).has_value()) << '"' << name << '"';
  }
}

TEST(Framing, CanonicalNamesRoundTrip) {
  const std::pair<const char*, const char*> rows[] = {
      {"raw", "raw"},
      {"packet:0", "raw"},
      {"onebyte", "packet:1"},
      {"{packet,2}", "packet:2"},
      {"fourbytes", "packet:4"},
      {"binary_packet:4", "binary_packet:4"},
      {"binary_packet:0", "binary_packet:0"},
      {"asn1", "asn1"},
      {"line", "line"},
  };
  for (const auto& [in, canonical] : rows) {
    const Framing f = framing(in);
    EXPECT_EQ(framing_name(f), canonical) << in;
    EXPECT_EQ(parse_framing(framing_name(f)), f) << in;
  }
}

TEST(Framing, EncodeHeader) {
  std::uint8_t h[4] = {};
  EXPECT_EQ(encode_header(framing("packet:1"), 255, h), 1u);
  EXPECT_EQ(h[0], 0xFF);
  EXPECT_FALSE(encode_header(framing("packet:1"), 256, h).has_value());
  EXPECT_EQ(encode_header(framing("packet:2"), 0x1234, h), 2u);
  EXPECT_EQ(h[0], 0x12);
  EXPECT_EQ(h[1], 0x34);
  EXPECT_FALSE(encode_header(framing("packet:2"), 0x10000, h).has_value());
  EXPECT_EQ(encode_header(framing("binary_packet:4"), 0xA1B2C3D4u, h), 4u);
  EXPECT_EQ(h[0], 0xA1);
  EXPECT_EQ(h[1], 0xB2);
  EXPECT_EQ(h[2], 0xC3);
  EXPECT_EQ(h[3], 0xD4);
  EXPECT_EQ(encode_header(framing("packet:4"), 0, h), 4u);
  EXPECT_EQ(h[0] | h[1] | h[2] | h[3], 0);
  if (sizeof(std::size_t) > 4) {
    const auto big = static_cast<std::size_t>(std::uint64_t{1} << 32);
    EXPECT_FALSE(encode_header(framing("packet:4"), big, h).has_value());
  }
  for (const char* mode : {"raw", "asn1", "line", "binary_packet:0"}) {
    EXPECT_EQ(encode_header(framing(mode), 1u << 30, h), 0u) << mode;
  }
}

TEST(Framing, ErrorsReadWellAndMapToGenericConditions) {
  const std::error_code codes[] = {FramingError::packet_too_large, FramingError::ber_bad_encoding,
                                   FramingError::ber_too_deep};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(&codes[i].category(), &framing_category());
    EXPECT_STREQ(codes[i].category().name(), "tlsport.framing");
    EXPECT_FALSE(codes[i].message().empty());
    for (std::size_t j = 0; j < i; ++j) EXPECT_NE(codes[i].message(), codes[j].message());
  }
  EXPECT_EQ(codes[0], std::errc::message_size);
  EXPECT_EQ(codes[1], std::errc::bad_message);
  EXPECT_EQ(codes[2], std::errc::bad_message);
  EXPECT_EQ(make_error_code(FramingError::packet_too_large), codes[0]);
}

TEST(Deframer, CapCanBeChangedBetweenPackets) {
  // A 50-byte packet in each mode: payload, a whole TLV, a whole line.
  const std::pair<const char*, std::string> cases[] = {
      {"packet:2", std::string(50, 'p')},
      {"asn1", std::string("\x04\x30") + std::string(48, 'b')},
      {"line", std::string(49, 'l') + "\n"}};
  for (const auto& [mode, packet] : cases) {
    const Framing f = framing(mode);
    Deframer d(f, 1000);
    std::vector<std::string> got;
    auto on = [&](std::string_view p) {
      got.emplace_back(p);
      return true;
    };
    const std::string small = frame_all(f, {packet});
    ASSERT_FALSE(d.feed(small, on)) << mode;
    d.set_max_packet(10);
    EXPECT_TRUE(d.feed(small, on)) << mode << ": the lowered cap must refuse 50 bytes";
    EXPECT_EQ(got.size(), 1u) << mode;
  }
}

}  // namespace
}  // namespace tlsport::protocol

TEST(Deframer, TakeBufferedHandsOutWhatIsHeldAndStartsAfresh) {
  using tlsport::protocol::Deframer;
  using tlsport::protocol::parse_framing;
  Deframer d(*parse_framing("line"), 1024);
  std::vector<std::string> got;
  // Stop after the first line: the rest (a second line, then bytes that are
  // no line yet) stays inside.
  d.feed("STARTTLS\r\n\x16\x03\x01tls bytes", [&](std::string_view p) {
    got.emplace_back(p);
    return false;
  });
  ASSERT_EQ(got, std::vector<std::string>{"STARTTLS\r\n"});
  EXPECT_EQ(d.take_buffered(), "\x16\x03\x01tls bytes");
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_FALSE(d.has_packet());
  d.feed("next\n", [&](std::string_view p) {
    got.emplace_back(p);
    return true;
  });
  EXPECT_EQ(got.back(), "next\n");
}
