// Erlang external term format <-> JSON model (docs/protocol.md §1.1).
//
// The decoder reads untrusted bytes: every length and count is checked
// against the bytes left before anything is reserved, nesting is capped at
// kMaxDepth (so the recursion is bounded), and no exception escapes.
#include "protocol/etf.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace tlsport::protocol::etf {
namespace {

using json = nlohmann::json;

/// Version byte that starts every external term.
constexpr std::uint8_t kVersion = 131;

/// Tags of the external term format (erts/emulator/beam/external.h).
enum Tag : std::uint8_t {
  kNewFloat = 70,
  kBitBinary = 77,
  kCompressed = 80,
  kAtomCacheRef = 82,
  kLocal = 121,
  kNewPid = 88,
  kNewPort = 89,
  kNewerReference = 90,
  kSmallInteger = 97,
  kInteger = 98,
  kFloat = 99,
  kAtom = 100,
  kReference = 101,
  kPort = 102,
  kPid = 103,
  kSmallTuple = 104,
  kLargeTuple = 105,
  kNil = 106,
  kString = 107,
  kList = 108,
  kBinary = 109,
  kSmallBig = 110,
  kLargeBig = 111,
  kNewFun = 112,
  kExport = 113,
  kNewReference = 114,
  kSmallAtom = 115,
  kMap = 116,
  kFun = 117,
  kAtomUtf8 = 118,
  kSmallAtomUtf8 = 119,
  kV4Port = 120,
};

/// A name for a tag, so that errors say what the client sent.
const char* tag_name(std::uint8_t tag) {
  switch (tag) {
    case kNewFloat:
      return "NEW_FLOAT_EXT";
    case kBitBinary:
      return "BIT_BINARY_EXT";
    case kCompressed:
      return "compressed term";
    case kAtomCacheRef:
      return "ATOM_CACHE_REF";
    case kLocal:
      return "LOCAL_EXT";
    case kNewPid:
      return "NEW_PID_EXT (pid)";
    case kNewPort:
      return "NEW_PORT_EXT (port)";
    case kNewerReference:
      return "NEWER_REFERENCE_EXT (reference)";
    case kReference:
      return "REFERENCE_EXT (reference)";
    case kPort:
      return "PORT_EXT (port)";
    case kPid:
      return "PID_EXT (pid)";
    case kNewFun:
      return "NEW_FUN_EXT (fun)";
    case kExport:
      return "EXPORT_EXT (fun)";
    case kNewReference:
      return "NEW_REFERENCE_EXT (reference)";
    case kFun:
      return "FUN_EXT (fun)";
    case kV4Port:
      return "V4_PORT_EXT (port)";
    default:
      return "unknown tag";
  }
}

/// Appends the UTF-8 form of Latin-1 bytes (ATOM_EXT / SMALL_ATOM_EXT names).
void latin1_to_utf8(std::string_view in, std::string& out) {
  out.reserve(out.size() + in.size());
  for (char ch : in) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out.push_back(ch);
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
}

/// Recursive-descent reader over one external term.
class Reader {
 public:
  /// Reads `in`, which must hold exactly one term.
  explicit Reader(std::string_view in) : in_(in) {}

  /// Decodes the whole input; false with `error_` set otherwise.
  bool run(json& out) {
    if (in_.empty()) return fail("empty term");
    if (static_cast<std::uint8_t>(in_[0]) != kVersion) {
      return fail("bad version byte " + std::to_string(static_cast<std::uint8_t>(in_[0])) +
                  " (expected 131)");
    }
    pos_ = 1;
    if (!term(out, 0)) return false;
    if (pos_ != in_.size()) {
      return fail(std::to_string(in_.size() - pos_) + " trailing bytes after the term");
    }
    return true;
  }

  /// Why run() failed.
  const std::string& error() const { return error_; }

 private:
  /// Bytes not read yet.
  std::size_t left() const { return in_.size() - pos_; }

  /// Records the error; always false, so that callers can `return fail(...)`.
  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }
  /// fail() for input that ends inside a term.
  bool truncated() { return fail("truncated term at offset " + std::to_string(pos_)); }

  /// Reads a big-endian unsigned of `n` bytes (n <= 4); false when truncated.
  bool uint(std::size_t n, std::uint32_t& v) {
    if (left() < n) return truncated();
    v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<std::uint8_t>(in_[pos_ + i]);
    pos_ += n;
    return true;
  }

  /// Takes `n` raw bytes; the check comes before any use of n.
  bool bytes(std::uint64_t n, std::string_view& v) {
    if (n > left()) {
      return fail("length " + std::to_string(n) + " at offset " + std::to_string(pos_) +
                  " exceeds the " + std::to_string(left()) + " bytes left");
    }
    v = in_.substr(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return true;
  }

  /// Checks a count of items needing at least `min_bytes` bytes each in total.
  bool count_fits(std::uint64_t min_bytes) {
    if (min_bytes > left()) {
      return fail("count needing " + std::to_string(min_bytes) + " bytes at offset " +
                  std::to_string(pos_) + " exceeds the " + std::to_string(left()) + " bytes left");
    }
    return true;
  }

  /// Reads the name of an atom of the given tag (already consumed) as UTF-8.
  bool atom_name(std::uint8_t tag, std::string& name) {
    std::uint32_t len = 0;
    const bool small = tag == kSmallAtom || tag == kSmallAtomUtf8;
    if (!uint(small ? 1 : 2, len)) return false;
    std::string_view raw;
    if (!bytes(len, raw)) return false;
    if (tag == kAtom || tag == kSmallAtom) {
      latin1_to_utf8(raw, name);
    } else {
      name.assign(raw);
    }
    return true;
  }

  /// True for the four atom tags.
  static bool is_atom(std::uint8_t tag) {
    return tag == kAtom || tag == kSmallAtom || tag == kAtomUtf8 || tag == kSmallAtomUtf8;
  }

  /// Reads a map key: an atom, a binary or a string (a flat list of bytes).
  bool key(std::string& out) {
    if (left() < 1) return truncated();
    const auto tag = static_cast<std::uint8_t>(in_[pos_++]);
    if (is_atom(tag)) return atom_name(tag, out);
    std::uint32_t len = 0;
    std::string_view raw;
    switch (tag) {
      case kBinary:
        if (!uint(4, len) || !bytes(len, raw)) return false;
        out.assign(raw);
        return true;
      case kString:
        if (!uint(2, len) || !bytes(len, raw)) return false;
        out.assign(raw);
        return true;
      case kNil:  // "" is [] in Erlang
        out.clear();
        return true;
      default:
        return fail("map key at offset " + std::to_string(pos_ - 1) +
                    " is not an atom, binary or string (tag " + std::to_string(tag) + ")");
    }
  }

  /// Reads an integer in sign-magnitude little-endian form (SMALL_BIG_EXT / LARGE_BIG_EXT).
  bool big(std::uint32_t n, json& out) {
    std::uint32_t sign = 0;
    if (!uint(1, sign)) return false;
    std::string_view digits;
    if (!bytes(n, digits)) return false;
    std::uint64_t mag = 0;
    for (std::size_t i = 0; i < digits.size(); ++i) {
      const auto d = static_cast<std::uint8_t>(digits[i]);
      if (d == 0) continue;
      if (i >= 8) return fail("integer wider than 64 bits");
      mag |= std::uint64_t{d} << (8 * i);
    }
    if (sign == 0) {
      out = mag;
      return true;
    }
    constexpr std::uint64_t kMinMagnitude = std::uint64_t{1} << 63;  // |INT64_MIN|
    if (mag > kMinMagnitude) return fail("integer below the 64-bit range");
    // Negating in unsigned arithmetic avoids overflow at INT64_MIN.
    out = mag == 0 ? std::int64_t{0} : static_cast<std::int64_t>(~mag + 1);
    return true;
  }

  /// Parses FLOAT_EXT: 31 bytes of "%.20e" text, NUL-padded.
  bool old_float(json& out) {
    std::string_view text;
    if (!bytes(31, text)) return false;
    const auto nul = text.find('\0');
    if (nul != std::string_view::npos) text = text.substr(0, nul);
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    double d = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(d)) {
      return fail("malformed FLOAT_EXT");
    }
    out = d;
    return true;
  }

  /// Decodes one term at nesting depth `depth` (containers count one level each).
  bool term(json& out, int depth) {
    if (left() < 1) return truncated();
    if (++terms_ > kMaxTerms) return fail("more than " + std::to_string(kMaxTerms) + " terms");
    const std::size_t at = pos_;
    const auto tag = static_cast<std::uint8_t>(in_[pos_++]);
    std::uint32_t n = 0;
    std::string_view raw;
    switch (tag) {
      case kSmallInteger:
        if (!uint(1, n)) return false;
        out = std::uint64_t{n};
        return true;
      case kInteger: {
        if (!uint(4, n)) return false;
        const auto v = static_cast<std::int32_t>(n);
        if (v >= 0) {
          out = static_cast<std::uint64_t>(v);
        } else {
          out = std::int64_t{v};
        }
        return true;
      }
      case kSmallBig:
        if (!uint(1, n)) return false;
        return big(n, out);
      case kLargeBig:
        if (!uint(4, n)) return false;
        return big(n, out);
      case kNewFloat: {
        if (!bytes(8, raw)) return false;
        std::uint64_t bits = 0;
        for (char c : raw) bits = (bits << 8) | static_cast<std::uint8_t>(c);
        double d = 0;
        std::memcpy(&d, &bits, sizeof d);
        if (!std::isfinite(d)) return fail("non-finite float at offset " + std::to_string(at));
        out = d;
        return true;
      }
      case kFloat:
        return old_float(out);
      case kAtom:
      case kSmallAtom:
      case kAtomUtf8:
      case kSmallAtomUtf8: {
        std::string name;
        if (!atom_name(tag, name)) return false;
        if (name == "true") {
          out = true;
        } else if (name == "false") {
          out = false;
        } else if (name == "undefined" || name == "null" || name == "nil") {
          out = nullptr;
        } else {
          out = std::move(name);
        }
        return true;
      }
      case kBinary:
        if (!uint(4, n) || !bytes(n, raw)) return false;
        out = json::binary(json::binary_t::container_type(raw.begin(), raw.end()));
        return true;
      case kString:
        // A flat list of bytes; kept as bytes, which is what a port gets for it.
        if (!uint(2, n) || !bytes(n, raw)) return false;
        out = std::string(raw);
        return true;
      case kNil:
        out = json::array();
        return true;
      default:
        break;
    }

    // Containers from here on.
    if (depth >= kMaxDepth) {
      return fail("term nested deeper than " + std::to_string(kMaxDepth) + " at offset " +
                  std::to_string(at));
    }
    switch (tag) {
      case kSmallTuple:
      case kLargeTuple:
      case kList: {
        if (!uint(tag == kSmallTuple ? 1 : 4, n)) return false;
        // Each element takes at least one byte; a list also has its tail.
        if (!count_fits(std::uint64_t{n} + (tag == kList ? 1 : 0))) return false;
        out = json::array();
        auto& array = out.get_ref<json::array_t&>();
        array.reserve(n);
        for (std::uint32_t i = 0; i < n; ++i) {
          array.emplace_back();
          if (!term(array.back(), depth + 1)) return false;
        }
        if (tag == kList) {
          if (left() < 1) return truncated();
          if (static_cast<std::uint8_t>(in_[pos_]) != kNil) {
            return fail("improper list at offset " + std::to_string(at));
          }
          ++pos_;
        }
        return true;
      }
      case kMap: {
        if (!uint(4, n)) return false;
        // Each pair takes at least two bytes.
        if (!count_fits(std::uint64_t{n} * 2)) return false;
        out = json::object();
        auto& object = out.get_ref<json::object_t&>();
        for (std::uint32_t i = 0; i < n; ++i) {
          std::string k;
          const std::size_t key_at = pos_;
          if (!key(k)) return false;
          auto [it, inserted] = object.try_emplace(std::move(k));
          if (!inserted) {
            return fail("duplicate map key \"" + it->first + "\" at offset " +
                        std::to_string(key_at));
          }
          if (!term(it->second, depth + 1)) return false;
        }
        return true;
      }
      default:
        return fail("unsupported term tag " + std::to_string(tag) + " (" + tag_name(tag) +
                    ") at offset " + std::to_string(at));
    }
  }

  std::string_view in_;    ///< the whole input, version byte included
  std::size_t pos_ = 0;    ///< next byte to read
  std::size_t terms_ = 0;  ///< terms decoded so far (capped by kMaxTerms)
  std::string error_;      ///< set by fail()
};

/// Appends `v` big-endian in `n` bytes.
void put_be(std::string& out, std::uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

/// Appends BINARY_EXT for bytes (strings and binaries alike).
void put_binary(std::string& out, const char* data, std::size_t size) {
  out.push_back(static_cast<char>(kBinary));
  put_be(out, size, 4);
  out.append(data, size);
}

/// Counts the code points of valid UTF-8 (as Erlang checks atom text); -1 if invalid.
long utf8_length(std::string_view s) {
  long count = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<std::uint8_t>(s[i]);
    std::size_t n = 0;
    std::uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      n = 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;  // no overlong forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return -1;
    }
    if (s.size() - i - 1 < n) return -1;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<std::uint8_t>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
    }
    i += n + 1;
    ++count;
  }
  return count;
}

/// Erlang's cap on the characters of an atom.
constexpr long kMaxAtomChars = 255;

/// Appends an atom, in the UTF-8 forms every OTP since 20 reads.
void put_atom(std::string& out, std::string_view name) {
  if (name.size() <= 255) {
    out.push_back(static_cast<char>(kSmallAtomUtf8));
    put_be(out, name.size(), 1);
  } else {
    out.push_back(static_cast<char>(kAtomUtf8));
    put_be(out, name.size(), 2);
  }
  out.append(name);
}

/// Appends an integer given as sign and magnitude, in the smallest form.
void put_integer(std::string& out, bool negative, std::uint64_t mag) {
  if (!negative && mag <= 255) {
    out.push_back(static_cast<char>(kSmallInteger));
    out.push_back(static_cast<char>(mag));
    return;
  }
  if ((!negative && mag <= 0x7FFFFFFFu) || (negative && mag <= 0x80000000u)) {
    out.push_back(static_cast<char>(kInteger));
    const std::uint32_t v =
        negative ? static_cast<std::uint32_t>(~mag + 1) : static_cast<std::uint32_t>(mag);
    put_be(out, v, 4);
    return;
  }
  std::uint8_t digits[8];
  int n = 0;
  for (std::uint64_t m = mag; m != 0; m >>= 8) digits[n++] = static_cast<std::uint8_t>(m & 0xFF);
  out.push_back(static_cast<char>(kSmallBig));
  out.push_back(static_cast<char>(n));
  out.push_back(negative ? 1 : 0);
  out.append(reinterpret_cast<const char*>(digits), static_cast<std::size_t>(n));
}

/// Appends one term (without the version byte).
void put_term(const json& v, std::string& out) {
  switch (v.type()) {
    case json::value_t::object:
      out.push_back(static_cast<char>(kMap));
      put_be(out, v.size(), 4);
      for (const auto& [k, item] : v.get_ref<const json::object_t&>()) {
        // A key no atom can hold (over 255 characters, or not UTF-8) would make
        // binary_to_term fail: such keys go as binaries, which readers accept.
        const long chars = utf8_length(k);
        if (chars >= 0 && chars <= kMaxAtomChars) {
          put_atom(out, k);
        } else {
          put_binary(out, k.data(), k.size());
        }
        put_term(item, out);
      }
      return;
    case json::value_t::array:
      if (v.empty()) {
        out.push_back(static_cast<char>(kNil));
        return;
      }
      out.push_back(static_cast<char>(kList));
      put_be(out, v.size(), 4);
      for (const auto& item : v) put_term(item, out);
      out.push_back(static_cast<char>(kNil));
      return;
    case json::value_t::string: {
      const auto& s = v.get_ref<const json::string_t&>();
      put_binary(out, s.data(), s.size());
      return;
    }
    case json::value_t::binary: {
      const auto& b = v.get_binary();
      put_binary(out, reinterpret_cast<const char*>(b.data()), b.size());
      return;
    }
    case json::value_t::boolean:
      put_atom(out, v.get<bool>() ? "true" : "false");
      return;
    case json::value_t::number_integer: {
      const auto i = v.get<std::int64_t>();
      // Two's-complement negation in unsigned arithmetic is safe for INT64_MIN.
      put_integer(out, i < 0, i < 0 ? ~static_cast<std::uint64_t>(i) + 1 : std::uint64_t(i));
      return;
    }
    case json::value_t::number_unsigned:
      put_integer(out, false, v.get<std::uint64_t>());
      return;
    case json::value_t::number_float: {
      const double d = v.get<double>();
      if (!std::isfinite(d)) {  // Erlang has no NaN or infinity; JSON would say null
        put_atom(out, "undefined");
        return;
      }
      std::uint64_t bits = 0;
      std::memcpy(&bits, &d, sizeof d);
      out.push_back(static_cast<char>(kNewFloat));
      put_be(out, bits, 8);
      return;
    }
    case json::value_t::null:
    case json::value_t::discarded:
    default:
      put_atom(out, "undefined");
      return;
  }
}

}  // namespace

bool decode(std::string_view in, nlohmann::json& out, std::string& error) {
  Reader reader(in);
  nlohmann::json value;
  // Only allocation failure can throw below; it must not escape either.
  try {
    if (!reader.run(value)) {
      error = reader.error();
      return false;
    }
  } catch (const std::exception& e) {
    error = std::string("cannot decode term: ") + e.what();
    return false;
  }
  out = std::move(value);
  return true;
}

void encode(const nlohmann::json& value, std::string& out) {
  out.push_back(static_cast<char>(kVersion));
  put_term(value, out);
}

}  // namespace tlsport::protocol::etf
