// otpipe CPU kernels: shared numerics (dtype traits, polynomial exp/log, r^p, the exact cut) of softmin.cpp
// and loop.cpp. Header-only, internal linkage: each translation unit gets its own inline copies.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <omp.h>
#include <vector>

#define OTP_INLINE inline __attribute__((always_inline))

namespace otp {


template <typename T> struct Traits;

template <> struct Traits<float> {
  using I = int32_t;
  static constexpr int TILE = 512;
  static constexpr float CUT = -80.0f;
};
template <> struct Traits<double> {
  using I = int64_t;
  static constexpr int TILE = 256;
  static constexpr double CUT = -700.0;
};

template <typename To, typename From> OTP_INLINE To bits_as(From v) {
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

// exp(x) for x in [-87, 88] (float) / [-708, 709] (double); callers clamp.  Round-to-nearest reduction
// x = n ln2 + r, |r| <= ln2/2, polynomial for exp(r) (least-squares fit in relative error, max rel. error
// 2.2e-9 for float, 4e-18 for double), then scaling by 2^n through the exponent bits.
OTP_INLINE float exp_poly(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
  float t = x * 1.44269504088896341f + magic;
  float n = t - magic;
  int32_t ni = bits_as<int32_t>(t) - bits_as<int32_t>(magic);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 0.0013827022765934641558f;
  p = p * r + 0.0083764343908903857981f;
  p = p * r + 0.041668497095292861409f;
  p = p * r + 0.16666400769410597605f;
  p = p * r + 0.49999990423801399295f;
  p = p * r + 1.0000000406168360245f;
  p = p * r + 1.0000000006930390484f;
  return p * bits_as<float>((ni + 127) << 23);
}

OTP_INLINE double exp_poly(double x) {
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  double t = x * 1.4426950408889634074 + magic;
  double n = t - magic;
  int64_t ni = bits_as<int64_t>(t) - bits_as<int64_t>(magic);
  double r = x - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  double p = 2.4986964666557213055e-8;
  p = p * r + 2.7635280424305652122e-7;
  p = p * r + 2.7557664610580739938e-6;
  p = p * r + 0.000024801478349178241788;
  p = p * r + 0.00019841269359984034349;
  p = p * r + 0.0013888888958938107906;
  p = p * r + 0.0083333333336094796687;
  p = p * r + 0.041666666666463591193;
  p = p * r + 0.1666666666666603452;
  p = p * r + 0.5000000000000021453;
  p = p * r + 1.00000000000000004;
  p = p * r + 0.99999999999999999635;
  return p * bits_as<double>((ni + 1023) << 52);
}

// log(x) for positive normal x: x = 2^e m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1)).
OTP_INLINE float log_poly(float x) {
  int32_t b = bits_as<int32_t>(x);
  int32_t e = ((b >> 23) & 0xff) - 127;
  float m = bits_as<float>((b & 0x007fffff) | 0x3f800000);
  bool big = m > 1.41421356237f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  float s = (m - 1.0f) / (m + 1.0f);
  float z = s * s;
  float q = 1.0f / 9.0f;
  q = q * z + 1.0f / 7.0f;
  q = q * z + 1.0f / 5.0f;
  q = q * z + 1.0f / 3.0f;
  q = q * z + 1.0f;
  float fe = (float)e;
  return fe * 0.693359375f + (2.0f * s * q + fe * -2.12194440e-4f);
}

OTP_INLINE double log_poly(double x) {
  int64_t b = bits_as<int64_t>(x);
  int64_t e = ((b >> 52) & 0x7ff) - 1023;
  double m = bits_as<double>((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
  bool big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  e = big ? e + 1 : e;
  double s = (m - 1.0) / (m + 1.0);
  double z = s * s;
  double q = 1.0 / 21.0;
  q = q * z + 1.0 / 19.0;
  q = q * z + 1.0 / 17.0;
  q = q * z + 1.0 / 15.0;
  q = q * z + 1.0 / 13.0;
  q = q * z + 1.0 / 11.0;
  q = q * z + 1.0 / 9.0;
  q = q * z + 1.0 / 7.0;
  q = q * z + 1.0 / 5.0;
  q = q * z + 1.0 / 3.0;
  q = q * z + 1.0;
  double fe = (double)e;
  return fe * 6.93147180369123816490e-01 + (2.0 * s * q + fe * 1.90821492927058770002e-10);
}

// r^p from the squared distance d2 = r^2.  PK: 2 -> p = 2, 1 -> p = 1, 3 -> p = 3/2, 0 -> any p (hp = p / 2).
template <typename T, int PK> OTP_INLINE T power_of(T d2, T hp) {
  if constexpr (PK == 2) {
    return d2;
  } else if constexpr (PK == 1) {
    return std::sqrt(d2);
  } else if constexpr (PK == 3) {  // p = 3/2 (the sample-complexity study): r^1.5 = r * sqrt(r)
    T r = std::sqrt(d2);
    return r * std::sqrt(r);
  } else {
    const T tiny = std::numeric_limits<T>::min();
    const T hi = sizeof(T) == 4 ? T(88) : T(709);
    const T lo = sizeof(T) == 4 ? T(-87) : T(-708);
    T safe = d2 > tiny ? d2 : T(1);
    T a = hp * log_poly(safe);
    a = std::min(std::max(a, lo), hi);
    T v = exp_poly(a);
    return d2 > tiny ? v : T(0);
  }
}

// exp(d) for d <= 0, exactly 0 below CUT.
template <typename T> OTP_INLINE T exp_cut(T d) {
  const T cut = Traits<T>::CUT;
  T e = exp_poly(std::max(d, cut));
  return d > cut ? e : T(0);
}


}  // namespace otp
