// Unit tests of protocol/ber (BerScanner) and of the asn1 framing built on it.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/ber.hpp"
#include "protocol/framing.hpp"

namespace tlsport::protocol {
namespace {

using namespace std::string_literals;
using Status = BerScanner::Status;

/// Bytes from hex pairs separated by spaces, e.g. "30 80 00 00".
std::string hex(std::string_view text) {
  std::string out;
  unsigned value = 0;
  int digits = 0;
  for (char c : text) {
    if (c == ' ') continue;
    const int d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
    value = value * 16 + static_cast<unsigned>(d);
    if (++digits == 2) {
      out += static_cast<char>(value);
      value = 0;
      digits = 0;
    }
  }
  return out;
}

/// A definite-length TLV: identifier bytes, then a minimal length, then contents.
std::string tlv(const std::string& tag, const std::string& contents) {
  std::string len;
  const std::size_t n = contents.size();
  if (n < 0x80) {
    len += static_cast<char>(n);
  } else {
    for (std::size_t v = n; v != 0; v >>= 8) len.insert(len.begin(), static_cast<char>(v & 0xFF));
    len.insert(len.begin(), static_cast<char>(0x80 | len.size()));
  }
  return tag + len + contents;
}

/// A constructed element with indefinite length: tag 80 contents 00 00.
std::string indefinite(const std::string& tag, const std::string& contents) {
  return tag + "\x80"s + contents + "\0\0"s;
}

/// `levels` nested indefinite SEQUENCEs around `core`.
std::string nest(int levels, const std::string& core) {
  std::string s = core;
  for (int i = 0; i < levels; ++i) s = indefinite("\x30", s);
  return s;
}

/// Scans `bytes` in one go with a fresh scanner.
BerScanner::Result scan_once(std::string_view bytes, std::size_t cap = SIZE_MAX,
                             unsigned depth = BerScanner::kDefaultMaxDepth) {
  BerScanner s(cap, depth);
  return s.scan(bytes);
}

/// Checks that `t` (followed by `trailer`, which must not be consumed) scans
/// as one complete TLV whether given whole, as every proper prefix (need_more),
/// byte by byte through advance(), or as growing prefixes through scan().
void expect_complete(const std::string& t, const std::string& trailer = "\x02\x01\x00"s) {
  SCOPED_TRACE("TLV of " + std::to_string(t.size()) + " bytes");
  const std::string with_trailer = t + trailer;
  const auto whole = scan_once(with_trailer);
  ASSERT_EQ(whole.status, Status::complete) << whole.error.message();
  EXPECT_EQ(whole.length, t.size());
  for (std::size_t i = 0; i < t.size(); ++i) {
    ASSERT_EQ(scan_once(std::string_view(t).substr(0, i)).status, Status::need_more) << i;
  }
  BerScanner bytewise;
  BerScanner prefixes;
  for (std::size_t i = 0; i < with_trailer.size(); ++i) {
    const auto r = bytewise.advance(std::string_view(with_trailer).substr(i, 1));
    const auto p = prefixes.scan(std::string_view(with_trailer).substr(0, i + 1));
    EXPECT_EQ(r.status, p.status) << i;
    if (i + 1 < t.size()) {
      ASSERT_EQ(r.status, Status::need_more) << i;
      EXPECT_EQ(prefixes.consumed(), i + 1);  // the scan stands at the end of what it saw
    } else {
      ASSERT_EQ(r.status, Status::complete) << i;
      EXPECT_EQ(r.length, t.size());
      EXPECT_EQ(p.length, t.size());
      EXPECT_EQ(bytewise.consumed(), t.size());  // the trailer is left alone
    }
  }
}

/// Checks that `bytes` fails with `error` whole and fed byte by byte, and
/// that every prefix before the failing byte only needs more.
void expect_error(const std::string& bytes, FramingError error, std::size_t cap = SIZE_MAX,
                  unsigned depth = BerScanner::kDefaultMaxDepth) {
  const auto whole = scan_once(bytes, cap, depth);
  ASSERT_EQ(whole.status, Status::error);
  EXPECT_EQ(whole.error, error);
  BerScanner s(cap, depth);
  BerScanner::Result r;
  std::size_t i = 0;
  for (; i < bytes.size() && r.status == Status::need_more; ++i) {
    r = s.advance(std::string_view(bytes).substr(i, 1));
  }
  ASSERT_EQ(r.status, Status::error);
  EXPECT_EQ(r.error, error);
  // Sticky: more bytes change nothing.
  const auto again = s.advance("\x02\x01\x00"s);
  EXPECT_EQ(again.status, Status::error);
  EXPECT_EQ(again.error, error);
}

// --- valid encodings -------------------------------------------------------

TEST(BerScanner, ShortDefinite) {
  expect_complete(hex("02 01 05"));
  expect_complete(hex("05 00"));  // empty contents
  expect_complete(tlv("\x04", std::string(127, 'x')));
}

TEST(BerScanner, HighTagNumbers) {
  expect_complete(tlv(hex("5F 81 01"), "one continuation"));
  expect_complete(tlv(hex("9F 7F"), "tag 127"));
  expect_complete(tlv(hex("1F 81 82 83 04"), "four continuation bytes"));
  expect_complete(indefinite(hex("7F 81 01"), tlv("\x04", "constructed, high tag")));
}

TEST(BerScanner, LongFormLengthsOfOneToEightBytes) {
  for (unsigned n = 1; n <= 8; ++n) {
    // Padded with leading zeros (fine in BER) so the contents stay short.
    std::string t = "\x04"s + static_cast<char>(0x80 | n) + std::string(n - 1, '\0') +
                    "\x03"
                    "abc"s;
    expect_complete(t);
    EXPECT_EQ(scan_once(t).length, 2 + n + 3);
  }
  expect_complete(tlv("\x04", std::string(300, 'y')));    // 82 01 2C
  expect_complete(tlv("\x04", std::string(70000, 'z')));  // 83 01 11 70
}

TEST(BerScanner, IndefiniteNesting) {
  expect_complete(hex("30 80 00 00"));
  expect_complete(hex("A0 80 02 01 07 00 00"));  // context-specific, constructed
  for (int levels = 1; levels <= 10; ++levels) expect_complete(nest(levels, tlv("\x02", "\x2A")));
  // Definite inside indefinite, several levels.
  expect_complete(
      indefinite("\x30", tlv("\x30", tlv("\x04", "a") + tlv("\x04", "b")) +
                             indefinite("\x31", tlv("\x30", tlv("\x02", "\x01")) + nest(3, "")) +
                             tlv("\x05", "")));
  // Indefinite inside definite: the outer length decides, the inside is opaque.
  expect_complete(tlv("\x30", nest(4, tlv("\x04", "deep")) + tlv("\x02", "\x01")));
  // And back again: indefinite > definite > indefinite > definite.
  expect_complete(indefinite("\x30", tlv("\x30", indefinite("\x30", tlv("\x04", "x")))));
  // A definite element whose contents look like an end-of-contents.
  expect_complete(indefinite("\x30", tlv("\x04", "\0\0"s)));
}

TEST(BerScanner, KnownLengthOnlyForADefiniteOutermostTlv) {
  BerScanner s;
  EXPECT_EQ(s.scan(hex("04 82 01")).status, Status::need_more);
  EXPECT_EQ(s.known_length(), 0u);
  EXPECT_EQ(s.scan(hex("04 82 01 00")).status, Status::need_more);
  EXPECT_EQ(s.known_length(), 4u + 256u);
  BerScanner i;
  EXPECT_EQ(i.scan(hex("30 80 04 82 01 00")).status, Status::need_more);
  EXPECT_EQ(i.known_length(), 0u);  // an inner definite length says nothing of the end
}

TEST(BerScanner, ResetStartsTheNextTlv) {
  BerScanner s;
  const std::string two = hex("02 01 05") + hex("30 80 05 00 00 00");
  auto r = s.scan(two);
  ASSERT_EQ(r.status, Status::complete);
  EXPECT_EQ(s.scan(two).length, 3u);  // complete is idempotent
  s.reset();
  r = s.scan(std::string_view(two).substr(3));
  ASSERT_EQ(r.status, Status::complete);
  EXPECT_EQ(r.length, 6u);
}

// --- errors ----------------------------------------------------------------

TEST(BerScanner, BadEncodings) {
  const auto bad = FramingError::ber_bad_encoding;
  expect_error(hex("04 FF 00"), bad);                             // reserved length byte
  expect_error(hex("04 89 00 00 00 00 00 00 00 00 01 00"), bad);  // 9 length bytes
  expect_error(hex("04 FE"), bad);                                // 126 length bytes
  expect_error(hex("04 80 00 00"), bad);                          // indefinite, primitive
  expect_error(hex("30 80 04 80 00 00 00 00"), bad);              // ... nested
  expect_error(hex("1F 81 82 83 84 01 00"), bad);                 // 5 tag continuation bytes
  expect_error(hex("1F 80 01 00"), bad);                          // tag padded with 0x80
  expect_error(hex("00 00"), bad);                                // end-of-contents at the top
  expect_error(hex("30 80 00 01 00"), bad);                       // end-of-contents with a length
  expect_error(hex("30 80 00 81 00"), bad);                       // ... in long form
}

TEST(BerScanner, DepthCap) {
  expect_complete(nest(64, ""));  // the default cap is 64 open levels
  expect_error(nest(65, ""), FramingError::ber_too_deep);
  // Refused at the 65th 0x80, before the rest of the message exists.
  std::string opening;
  for (int i = 0; i < 65; ++i) opening += "\x30\x80";
  expect_error(opening, FramingError::ber_too_deep);

  BerScanner s(SIZE_MAX, 3);
  EXPECT_EQ(s.scan(nest(3, "")).status, Status::complete);
  expect_error(nest(4, ""), FramingError::ber_too_deep, SIZE_MAX, 3);
  // Depth counts open levels, not how many were opened in sequence.
  BerScanner wide(SIZE_MAX, 1);
  EXPECT_EQ(wide.scan(indefinite("\x30", tlv("\x30", nest(5, "")) + tlv("\x05", ""))).status,
            Status::complete);
  expect_error(hex("30 80 30 80 00 00 00 00"), FramingError::ber_too_deep, SIZE_MAX, 1);
  // Depth 0 still allows definite lengths.
  EXPECT_EQ(scan_once(tlv("\x30", nest(2, "")), SIZE_MAX, 0).status, Status::complete);
}

TEST(BerScanner, CapOnDefiniteLength) {
  const auto too_large = FramingError::packet_too_large;
  const std::string ten = tlv("\x04", "12345678");
  EXPECT_EQ(scan_once(ten, 10).status, Status::complete);
  expect_error(ten, too_large, 9);
  // Refused on the header alone: the contents need not (and will not) arrive.
  BerScanner s(100);
  const auto r = s.scan(hex("04 82 10 00"));
  EXPECT_EQ(r.status, Status::error);
  EXPECT_EQ(r.error, too_large);
  EXPECT_EQ(s.consumed(), 4u);
  // The largest 8-byte length, under the largest cap: no overflow.
  expect_error(hex("04 88 FF FF FF FF FF FF FF FF"), too_large);
  expect_error(hex("04 88 80 00 00 00 00 00 00 00"), too_large, SIZE_MAX / 2);
}

TEST(BerScanner, CapOnIndefiniteTotal) {
  const auto too_large = FramingError::packet_too_large;
  const std::string eight = hex("30 80 04 02 AA BB 00 00");
  EXPECT_EQ(scan_once(eight, 8).status, Status::complete);
  expect_error(eight, too_large, 7);  // the last end-of-contents byte is one too many
  expect_error(eight, too_large, 5);  // an inner length past the cap
  // A stream of small elements that never ends is stopped at the cap.
  std::string endless = hex("30 80");
  for (int i = 0; i < 100; ++i) endless += tlv("\x04", std::string(10, 'e'));
  BerScanner s(500);
  BerScanner::Result r;
  for (std::size_t i = 0; i < endless.size() && r.status == Status::need_more; ++i) {
    r = s.advance(std::string_view(endless).substr(i, 1));
  }
  EXPECT_EQ(r.status, Status::error);
  EXPECT_EQ(r.error, too_large);
  EXPECT_LE(s.consumed(), 500u);
}

// --- resumability ----------------------------------------------------------

/// A large indefinite-length message: many small elements, some nesting.
std::string big_indefinite(std::size_t at_least) {
  std::string inner;
  const std::string element = tlv("\x04", std::string(125, 'p'));
  const std::string nested = nest(3, tlv("\x02", "\x01") + tlv("\x30", tlv("\x04", "q")));
  while (inner.size() < at_least) {
    inner += element;
    if (inner.size() % 7 == 0) inner += nested;
  }
  return indefinite("\x30", inner);
}

TEST(BerScanner, LargeIndefiniteInPiecesIsScannedOnce) {
  const std::string msg = big_indefinite(16u << 20);
  BerScanner s(64u << 20);
  const std::size_t piece = 16 * 1024;
  BerScanner::Result r;
  std::size_t seen = 0;
  for (std::size_t n = piece;; n = std::min(n + piece, msg.size())) {
    // scan() is given everything so far, but it already stands at the end of
    // the previous prefix: it only ever looks at the new bytes.
    ASSERT_EQ(s.consumed(), seen);
    r = s.scan(std::string_view(msg).substr(0, n));
    if (r.status != Status::need_more) break;
    ASSERT_EQ(s.consumed(), n);
    ASSERT_LT(n, msg.size());
    seen = n;
  }
  ASSERT_EQ(r.status, Status::complete) << r.error.message();
  EXPECT_EQ(r.length, msg.size());
}

// --- the asn1 deframer -----------------------------------------------------

/// Packets and error from feeding `pieces` to an asn1 deframer.
struct Fed {
  std::vector<std::string> packets;  ///< packets in order
  std::error_code error;             ///< first error
  std::size_t held = 0;              ///< buffered() at the end
  std::size_t max_held = 0;          ///< largest buffered() seen before the end

  bool operator==(const Fed& o) const {
    return packets == o.packets && error == o.error && held == o.held;
  }
};

Fed feed_asn1(std::size_t cap, const std::vector<std::string_view>& pieces) {
  Deframer d(*parse_framing("asn1"), cap);
  Fed out;
  for (auto p : pieces) {
    out.error = d.feed(p, [&](std::string_view packet) {
      out.packets.emplace_back(packet);
      return true;
    });
    if (out.error) break;
    out.max_held = std::max(out.max_held, d.buffered());
  }
  out.held = d.buffered();
  return out;
}

TEST(Asn1Deframer, LargeIndefiniteIn16KiBPieces) {
  const std::string msg = big_indefinite(16u << 20) + hex("02 01 05");
  std::vector<std::string_view> pieces;
  for (std::size_t at = 0; at < msg.size(); at += 16 * 1024) {
    pieces.push_back(std::string_view(msg).substr(at, 16 * 1024));
  }
  const Fed f = feed_asn1(64u << 20, pieces);
  ASSERT_FALSE(f.error) << f.error.message();
  ASSERT_EQ(f.packets.size(), 2u);
  EXPECT_EQ(f.packets[0].size(), msg.size() - 3);
  EXPECT_TRUE(f.packets[0] == std::string_view(msg).substr(0, msg.size() - 3));
  EXPECT_EQ(f.packets[1], hex("02 01 05"));
  EXPECT_EQ(f.held, 0u);
}

TEST(Asn1Deframer, OverCapDefiniteLengthFailsBeforeBuffering) {
  const std::string header = hex("04 84 04 00 00 01");  // 64 MiB + 1 of contents
  for (std::size_t cut = 0; cut <= header.size(); ++cut) {
    const std::string_view h = header;
    const Fed f = feed_asn1(64u << 20, {h.substr(0, cut), h.substr(cut)});
    EXPECT_EQ(f.error, FramingError::packet_too_large);
    EXPECT_LE(f.max_held, header.size());
    EXPECT_EQ(f.held, 0u);
  }
}

TEST(Asn1Deframer, OverCapIndefiniteTotalFailsBeforeBuffering) {
  std::string endless = hex("30 80");
  for (int i = 0; i < 50; ++i) endless += tlv("\x04", std::string(127, 'e'));
  std::vector<std::string_view> pieces;
  for (std::size_t at = 0; at < endless.size(); at += 16) {
    pieces.push_back(std::string_view(endless).substr(at, 16));
  }
  const Fed f = feed_asn1(1000, pieces);
  EXPECT_EQ(f.error, FramingError::packet_too_large);
  EXPECT_TRUE(f.packets.empty());
  EXPECT_LE(f.max_held, 1000u);
  EXPECT_EQ(f.held, 0u);
}

TEST(Asn1Deframer, TruncatedNeverYieldsAPacket) {
  const std::string msg = indefinite("\x30", tlv("\x04", "abc") + nest(2, tlv("\x05", "")));
  for (std::size_t n = 1; n < msg.size(); ++n) {
    const Fed f = feed_asn1(4096, {std::string_view(msg).substr(0, n)});
    EXPECT_TRUE(f.packets.empty()) << n;
    EXPECT_FALSE(f.error) << n;
    EXPECT_EQ(f.held, n);
  }
}

TEST(Asn1Deframer, ArbitraryBytesGiveTheSameOutcomeHoweverSplit) {
  // Bytes drawn mostly from header-ish values, so that valid TLVs, bad ones
  // and deep nestings all turn up; whatever happens must not depend on splits.
  std::mt19937 rng(2024);
  const unsigned char alphabet[] = {0x00, 0x01, 0x02, 0x04, 0x05, 0x1F, 0x30, 0x80,
                                    0x81, 0x82, 0x88, 0xFF, 0x7F, 0xA0, 0x24, 0x03};
  for (int round = 0; round < 300; ++round) {
    std::string bytes(rng() % 48 + 1, '\0');
    for (auto& c : bytes) c = static_cast<char>(alphabet[rng() % sizeof alphabet]);
    const std::string_view b = bytes;
    const Fed whole = feed_asn1(64, {b});
    for (std::size_t i = 0; i <= b.size(); ++i) {
      ASSERT_EQ(feed_asn1(64, {b.substr(0, i), b.substr(i)}), whole) << round << " at " << i;
    }
    std::vector<std::string_view> single;
    for (std::size_t i = 0; i < b.size(); ++i) single.push_back(b.substr(i, 1));
    ASSERT_EQ(feed_asn1(64, single), whole) << round;
  }
}

}  // namespace
}  // namespace tlsport::protocol
