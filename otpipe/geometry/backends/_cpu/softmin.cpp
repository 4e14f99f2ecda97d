// otpipe CPU reduction kernels: fused, vectorised log-sum-exp reductions over point clouds.
//
// For rows x_i (B, N, D), columns y_j (stored as coordinate planes, B, D, M) and offsets h_j (B, M):
//
//   s_ij   = h_j - c * r_ij^p,          r_ij = |x_i - y_j|,   c = scale / eps
//   lse_i  = log sum_j exp(s_ij)        (always written)
//   w_ij   = exp(s_ij - lse_i)          (softmax over j)
//
// and, by mode,
//   mode 0: nothing else                                   (softmin: f_i = -eps * lse_i)
//   mode 1: acc_ik = sum_j w_ij v_kj,            k < K     (softmax-weighted means; v as (B, K, M) planes)
//   mode 2: acc_i  = sum_j w_ij r_ij^p                     (softmax-weighted cost, without the scale)
//   mode 3: acc_ik = sum_j w_ij u_j G_ij (x_ik - y_jk), k < D, and acc_iD = sum_j w_ij u_j
//           with G_ij = r_ij^(p-2) (0 at r = 0; 1 for p = 2) and optional column weights u (B, M)
//           (gradients of the softmin: dC/dx = scale * p * G * (x - y)).
//
// Numerics: distances from coordinate differences (no |x|^2 + |y|^2 - 2<x,y> cancellation); columns are
// streamed in tiles kept in L1; per tile a first pass writes the exponents and their max, the running max is
// updated (old sums rescaled), and a second pass accumulates exp(s - max).  Terms with s - max < CUT are
// dropped exactly (they are below exp(CUT) relative to the largest term: 1.8e-35 for float, 1e-304 for
// double); this also keeps the vectorised exp on its fast path and makes -1e30 padding contribute 0.
// exp/log are evaluated by inline polynomial code written for auto-vectorisation (no libm calls, no
// -ffast-math: IEEE semantics are kept, reductions vectorise through `omp simd` clauses).
// Threads: OpenMP over (batch, block of ROWS rows), with the thread count given by the caller.
// Block-sparse variant (otp_reduce_ranges_*): rows sorted by cluster, each row cluster visits only a list of
// column ranges (the multiscale backend's kept cluster pairs); sums over the other columns are skipped.
// otp_block_mask: the multiscale backend's truncation test on every cluster pair (see
// otpipe/geometry/blocks.py for the two bounds; this is the same arithmetic, fused, without temporaries).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <omp.h>
#include <vector>

#include "poly.h"

namespace {

using namespace otp;

constexpr int ROWS = 4;  // rows that share each column-tile load

template <typename T> struct Problem {
  const T* x;    // (B, N, D)
  const T* yT;   // (B, D, M)
  const T* h;    // (B, M)
  const T* vT;   // (B, K, M) for mode 1
  const T* u;    // (B, M) column weights for mode 3, or null
  int64_t B, N, M, D, K;
  T c, hp;
  T* lse;        // (B, N)
  T* acc;        // (B, N, K) mode 1, (B, N) mode 2, (B, N, D + 1) mode 3
  // block-sparse variant (null: dense): row cluster I owns rows [rptr[I], rptr[I+1]) and visits the column
  // ranges [rng[2q], rng[2q+1]) for q in [cptr[I], cptr[I+1]); the same structure for every batch element
  const int64_t* rptr;
  const int64_t* cptr;
  const int64_t* rng;
  int64_t nclus;
};

// Pass 1 over one tile: exponents s[r][j] (and r^p, d2 when needed), returns per-row maxima.
template <typename T, int DS, int PK, bool KEEP>
OTP_INLINE void tile_exponents(const Problem<T>& P, const T* xr[ROWS], const T* yb, const T* hb, int64_t j0,
                               int nt, T (*s)[Traits<T>::TILE], T (*pw)[Traits<T>::TILE],
                               T (*d2)[Traits<T>::TILE], T mx[ROWS]) {
  const int64_t M = P.M;
  const int D = DS > 0 ? DS : (int)P.D;
  const T c = P.c, hp = P.hp;
  T m0 = -std::numeric_limits<T>::infinity(), m1 = m0, m2 = m0, m3 = m0;
  const T* hj = hb + j0;
  if constexpr (DS > 0 && PK != 0) {
    // small D, p in {1, 3/2, 2}: one fused loop (coordinates unrolled, ROWS rows per column load)
    T xv[ROWS][DS > 0 ? DS : 1];
    for (int r = 0; r < ROWS; ++r)
      for (int k = 0; k < DS; ++k) xv[r][k] = xr[r][k];
#pragma omp simd reduction(max : m0, m1, m2, m3)
    for (int j = 0; j < nt; ++j) {
      T q[ROWS] = {T(0), T(0), T(0), T(0)};
      for (int k = 0; k < DS; ++k) {
        T yk = yb[k * M + j0 + j];
        for (int r = 0; r < ROWS; ++r) {
          T dk = xv[r][k] - yk;
          q[r] += dk * dk;
        }
      }
      T sv[ROWS];
      for (int r = 0; r < ROWS; ++r) {
        T w = power_of<T, PK>(q[r], hp);
        sv[r] = hj[j] - c * w;
        s[r][j] = sv[r];
        if constexpr (KEEP) {
          pw[r][j] = w;
          d2[r][j] = q[r];
        }
      }
      m0 = std::max(m0, sv[0]);
      m1 = std::max(m1, sv[1]);
      m2 = std::max(m2, sv[2]);
      m3 = std::max(m3, sv[3]);
    }
  } else {
    // squared distances into the d2 buffer, then one simple loop per row for r^p, exponents and max
    // (keeps the polynomial log/exp of general p in a loop that the compiler vectorises)
    if constexpr (DS > 0) {
      T xv[ROWS][DS > 0 ? DS : 1];
      for (int r = 0; r < ROWS; ++r)
        for (int k = 0; k < DS; ++k) xv[r][k] = xr[r][k];
      T* q0 = d2[0];
      T* q1 = d2[1];
      T* q2 = d2[2];
      T* q3 = d2[3];
#pragma omp simd
      for (int j = 0; j < nt; ++j) {
        T q[ROWS] = {T(0), T(0), T(0), T(0)};
        for (int k = 0; k < DS; ++k) {
          T yk = yb[k * M + j0 + j];
          for (int r = 0; r < ROWS; ++r) {
            T dk = xv[r][k] - yk;
            q[r] += dk * dk;
          }
        }
        q0[j] = q[0], q1[j] = q[1], q2[j] = q[2], q3[j] = q[3];
      }
    } else {
      for (int r = 0; r < ROWS; ++r) {
        T* q = d2[r];
#pragma omp simd
        for (int j = 0; j < nt; ++j) q[j] = T(0);
        for (int k = 0; k < D; ++k) {
          const T xk = xr[r][k];
          const T* yk = yb + k * M + j0;
#pragma omp simd
          for (int j = 0; j < nt; ++j) {
            T dk = xk - yk[j];
            q[j] += dk * dk;
          }
        }
      }
    }
    T mm[ROWS];
    for (int r = 0; r < ROWS; ++r) {
      T m = -std::numeric_limits<T>::infinity();
      const T* q = d2[r];
      T* sr = s[r];
      T* pr = pw[r];
#pragma omp simd reduction(max : m)
      for (int j = 0; j < nt; ++j) {
        T w = power_of<T, PK>(q[j], hp);
        T sv = hj[j] - c * w;
        sr[j] = sv;
        if constexpr (KEEP) pr[j] = w;
        m = std::max(m, sv);
      }
      mm[r] = m;
    }
    m0 = mm[0], m1 = mm[1], m2 = mm[2], m3 = mm[3];
  }
  mx[0] = m0, mx[1] = m1, mx[2] = m2, mx[3] = m3;
}

template <typename T, int DS, int PK, int MODE>
void reduce(const Problem<T>& P, int nthreads) {
  constexpr int TILE = Traits<T>::TILE;
  constexpr bool KEEP = (MODE == 2 || MODE == 3);
  const int64_t B = P.B, N = P.N, M = P.M, D = P.D;
  const int64_t KA = MODE == 1 ? P.K : MODE == 2 ? 1 : MODE == 3 ? D + 1 : 0;  // accumulator channels
  // tasks: blocks of ROWS rows inside one row cluster (dense: one cluster, all rows, one column range)
  const int64_t dense_r[2] = {0, N}, dense_c[2] = {0, 1}, dense_rng[2] = {0, M};
  const int64_t* rptr = P.rptr ? P.rptr : dense_r;
  const int64_t* cptr = P.rptr ? P.cptr : dense_c;
  const int64_t* rng = P.rptr ? P.rng : dense_rng;
  const int64_t nclus = P.rptr ? P.nclus : 1;
  std::vector<int64_t> blk_start, blk_clus;
  for (int64_t I = 0; I < nclus; ++I)
    for (int64_t i = rptr[I]; i < rptr[I + 1]; i += ROWS) blk_start.push_back(i), blk_clus.push_back(I);
  const int64_t nblk = (int64_t)blk_start.size();
  const int64_t ntask = B * nblk;
  const T ninf = -std::numeric_limits<T>::infinity();

#pragma omp parallel num_threads(nthreads)
  {
    alignas(64) T s[ROWS][TILE];
    constexpr int NB = (KEEP || DS == 0 || PK == 0) ? ROWS : 1;  // rows of the r^p and d2 buffers
    alignas(64) T pw[NB][TILE];
    alignas(64) T d2[NB][TILE];
    alignas(64) T e[ROWS][TILE];
    double* acc = KA > 0 ? new double[ROWS * KA] : nullptr;

#pragma omp for schedule(dynamic, 4)
    for (int64_t task = 0; task < ntask; ++task) {
      const int64_t b = task / nblk;
      const int64_t i0 = blk_start[task % nblk];
      const int64_t I = blk_clus[task % nblk];
      const int64_t iend = rptr[I + 1];
      const T* xr[ROWS];
      for (int r = 0; r < ROWS; ++r) xr[r] = P.x + (b * N + std::min(i0 + r, iend - 1)) * D;
      const T* yb = P.yT + b * D * M;
      const T* hb = P.h + b * M;
      const T* vb = MODE == 1 ? P.vT + b * P.K * M : nullptr;
      const T* ub = (MODE == 3 && P.u) ? P.u + b * M : nullptr;
      double run_m[ROWS], run_s[ROWS];
      for (int r = 0; r < ROWS; ++r) run_m[r] = -std::numeric_limits<double>::infinity(), run_s[r] = 0.0;
      for (int64_t a = 0; a < ROWS * KA; ++a) acc[a] = 0.0;

      for (int64_t q = cptr[I]; q < cptr[I + 1]; ++q)
      for (int64_t j0 = rng[2 * q], jend = rng[2 * q + 1]; j0 < jend; j0 += TILE) {
        const int nt = (int)std::min<int64_t>(TILE, jend - j0);
        T mx[ROWS];
        tile_exponents<T, DS, PK, KEEP>(P, xr, yb, hb, j0, nt, s, pw, d2, mx);
        for (int r = 0; r < ROWS; ++r) {
          if (!(mx[r] > ninf)) continue;  // every term of this tile is exactly zero
          if ((double)mx[r] > run_m[r]) {
            const double alpha = std::exp(run_m[r] - (double)mx[r]);
            run_s[r] *= alpha;
            for (int64_t k = 0; k < KA; ++k) acc[r * KA + k] *= alpha;
            run_m[r] = (double)mx[r];
          }
          const T m = (T)run_m[r];
          const T* sr = s[r];
          T tot = T(0);
          if constexpr (MODE == 0) {
#pragma omp simd reduction(+ : tot)
            for (int j = 0; j < nt; ++j) tot += exp_cut<T>(sr[j] - m);
          } else {
            T* er = e[r];
#pragma omp simd reduction(+ : tot)
            for (int j = 0; j < nt; ++j) {
              T ev = exp_cut<T>(sr[j] - m);
              er[j] = ev;
              tot += ev;
            }
            double* ar = acc + r * KA;
            if constexpr (MODE == 1) {
              for (int64_t k = 0; k < P.K; ++k) {
                const T* vk = vb + k * M + j0;
                T t = T(0);
#pragma omp simd reduction(+ : t)
                for (int j = 0; j < nt; ++j) t += er[j] * vk[j];
                ar[k] += (double)t;
              }
            } else if constexpr (MODE == 2) {
              const T* pr = pw[r];
              T t = T(0);
#pragma omp simd reduction(+ : t)
              for (int j = 0; j < nt; ++j) t += er[j] * pr[j];
              ar[0] += (double)t;
            } else {  // MODE == 3: er becomes e * u * G; channel D is sum e * u
              const T* pr = pw[r];
              const T* qr = d2[r];
              T tu = T(0);
              if (ub) {
                const T* uj = ub + j0;
#pragma omp simd reduction(+ : tu)
                for (int j = 0; j < nt; ++j) {
                  T eu = er[j] * uj[j];
                  tu += eu;
                  er[j] = eu;
                }
              } else {
                tu = tot;
              }
              if constexpr (PK != 2) {
#pragma omp simd
                for (int j = 0; j < nt; ++j) er[j] = qr[j] > T(0) ? er[j] * (pr[j] / qr[j]) : T(0);
              }
              for (int64_t k = 0; k < D; ++k) {
                const T xk = xr[r][k];
                const T* yk = yb + k * M + j0;
                T t = T(0);
#pragma omp simd reduction(+ : t)
                for (int j = 0; j < nt; ++j) t += er[j] * (xk - yk[j]);
                ar[k] += (double)t;
              }
              ar[D] += (double)tu;
            }
          }
          run_s[r] += (double)tot;
        }
      }
      for (int r = 0; r < ROWS && i0 + r < iend; ++r) {
        const int64_t i = b * N + i0 + r;
        P.lse[i] = (T)(run_m[r] + std::log(run_s[r]));
        if (KA > 0) {
          const double inv = 1.0 / run_s[r];
          for (int64_t k = 0; k < KA; ++k) P.acc[i * KA + k] = (T)(acc[r * KA + k] * inv);
        }
      }
    }
    delete[] acc;
  }
}

template <typename T, int DS, int PK> void dispatch_mode(const Problem<T>& P, int mode, int nthreads) {
  switch (mode) {
    case 0: reduce<T, DS, PK, 0>(P, nthreads); break;
    case 1: reduce<T, DS, PK, 1>(P, nthreads); break;
    case 2: reduce<T, DS, PK, 2>(P, nthreads); break;
    default: reduce<T, DS, PK, 3>(P, nthreads); break;
  }
}

template <typename T, int DS> void dispatch_p(const Problem<T>& P, int pk, int mode, int nthreads) {
  if (pk == 2) dispatch_mode<T, DS, 2>(P, mode, nthreads);
  else if (pk == 1) dispatch_mode<T, DS, 1>(P, mode, nthreads);
  else if (pk == 3) dispatch_mode<T, DS, 3>(P, mode, nthreads);
  else dispatch_mode<T, DS, 0>(P, mode, nthreads);
}

template <typename T>
int run(const T* x, const T* yT, const T* h, const T* vT, const T* u, int64_t B, int64_t N, int64_t M, int64_t D,
        int64_t K, double c, double p, int mode, int nthreads, T* lse, T* acc, const int64_t* rptr = nullptr,
        const int64_t* cptr = nullptr, const int64_t* rng = nullptr, int64_t nclus = 0) {
  if (B < 0 || N < 0 || M < 1 || D < 1 || mode < 0 || mode > 3 || (mode == 1 && K < 1) || !(p > 0)) return 1;
  if (B == 0 || N == 0) return 0;
  if (rptr) {  // the block structure must cover rows 0..N in order and name column ranges inside 0..M
    if (nclus < 1 || rptr[0] != 0 || rptr[nclus] != N || cptr[0] != 0) return 2;
    for (int64_t I = 0; I < nclus; ++I)
      if (rptr[I + 1] < rptr[I] || cptr[I + 1] < cptr[I]) return 2;
    for (int64_t q = 0; q < cptr[nclus]; ++q)
      if (rng[2 * q] < 0 || rng[2 * q + 1] > M || rng[2 * q + 1] < rng[2 * q]) return 2;
  }
  Problem<T> P{x, yT, h, vT, u, B, N, M, D, K, (T)c, (T)(0.5 * p), lse, acc, rptr, cptr, rng, nclus};
  const int pk = p == 2.0 ? 2 : p == 1.0 ? 1 : p == 1.5 ? 3 : 0;
  if (nthreads < 1) nthreads = 1;
  switch (D) {
    case 1: dispatch_p<T, 1>(P, pk, mode, nthreads); break;
    case 2: dispatch_p<T, 2>(P, pk, mode, nthreads); break;
    case 3: dispatch_p<T, 3>(P, pk, mode, nthreads); break;
    default: dispatch_p<T, 0>(P, pk, mode, nthreads); break;
  }
  return 0;
}

}  // namespace

extern "C" {

int otp_reduce_f32(const float* x, const float* yT, const float* h, const float* vT, const float* u, int64_t B,
                   int64_t N, int64_t M, int64_t D, int64_t K, double c, double p, int mode, int nthreads,
                   float* lse, float* acc) {
  return run<float>(x, yT, h, vT, u, B, N, M, D, K, c, p, mode, nthreads, lse, acc);
}

int otp_reduce_f64(const double* x, const double* yT, const double* h, const double* vT, const double* u,
                   int64_t B, int64_t N, int64_t M, int64_t D, int64_t K, double c, double p, int mode,
                   int nthreads, double* lse, double* acc) {
  return run<double>(x, yT, h, vT, u, B, N, M, D, K, c, p, mode, nthreads, lse, acc);
}

// Block-sparse variants: only the column ranges listed for each row cluster are visited (see Problem).
int otp_reduce_ranges_f32(const float* x, const float* yT, const float* h, const float* vT, const float* u,
                          int64_t B, int64_t N, int64_t M, int64_t D, int64_t K, double c, double p, int mode,
                          int nthreads, float* lse, float* acc, const int64_t* rptr, const int64_t* cptr,
                          const int64_t* rng, int64_t nclus) {
  return run<float>(x, yT, h, vT, u, B, N, M, D, K, c, p, mode, nthreads, lse, acc, rptr, cptr, rng, nclus);
}

int otp_reduce_ranges_f64(const double* x, const double* yT, const double* h, const double* vT, const double* u,
                          int64_t B, int64_t N, int64_t M, int64_t D, int64_t K, double c, double p, int mode,
                          int nthreads, double* lse, double* acc, const int64_t* rptr, const int64_t* cptr,
                          const int64_t* rng, int64_t nclus) {
  return run<double>(x, yT, h, vT, u, B, N, M, D, K, c, p, mode, nthreads, lse, acc, rptr, cptr, rng, nclus);
}

// Cluster-pair truncation mask. Row clusters I (nI), column clusters J (nJ), D coordinates. Per cluster:
// centre c, ball radius rad, box lo/hi, potential max fmax, least-squares slope beta and residual max rmax.
// U_IJ = min(fmax_I + fmax_J - s * max(box_gap, ball_gap)^p,
//            rmax_I + rmax_J + sum_d max((bI+bJ) lo_I, (bI+bJ) hi_I) + sum_d max_{z in [loI-hiJ, hiI-loJ]} q(z))
// with q(z) = -bJ z - s z^2 for p = 2, and for other p the looser max(-bJ z) - s * box_gap^p.
// keep[I * nJ + J] = U_IJ >= thr; then each row's and each column's largest U_IJ is kept too.
int otp_block_mask(const double* cI, const double* radI, const double* loI, const double* hiI, const double* fmaxI,
                   const double* betaI, const double* rmaxI, int64_t nI, const double* cJ, const double* radJ,
                   const double* loJ, const double* hiJ, const double* fmaxJ, const double* betaJ,
                   const double* rmaxJ, int64_t nJ, int64_t D, double s, double p, double thr, int nthreads,
                   uint8_t* keep) {
  if (nI <= 0 || nJ <= 0 || D <= 0) return 1;
  const bool p2 = (p == 2.0);
  const double NEG = -std::numeric_limits<double>::infinity();
  std::vector<double> colbest((size_t)nthreads * nJ, NEG);
  std::vector<int64_t> colarg((size_t)nthreads * nJ, 0);
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    double* cb = colbest.data() + (size_t)t * nJ;
    int64_t* ca = colarg.data() + (size_t)t * nJ;
#pragma omp for schedule(dynamic, 16)
    for (int64_t I = 0; I < nI; ++I) {
      double rowbest = NEG;
      int64_t rowarg = 0;
      uint8_t* out = keep + I * nJ;
      for (int64_t J = 0; J < nJ; ++J) {
        double d2c = 0, g2 = 0, lin = 0, quad = 0, lin2 = 0;
        for (int64_t d = 0; d < D; ++d) {
          const double li = loI[I * D + d], hi = hiI[I * D + d], lj = loJ[J * D + d], hj = hiJ[J * D + d];
          const double dc = cI[I * D + d] - cJ[J * D + d];
          d2c += dc * dc;
          const double zlo = li - hj, zhi = hi - lj;
          const double gd = zlo > 0 ? zlo : (zhi < 0 ? -zhi : 0.0);
          g2 += gd * gd;
          const double bj = betaJ[J * D + d], v = betaI[I * D + d] + bj;
          lin += std::max(v * li, v * hi);
          if (p2) {
            const double z = std::min(std::max(-bj / (2 * s), zlo), zhi);
            quad += -bj * z - s * z * z;
          } else {
            lin2 += std::max(-bj * zlo, -bj * zhi);
          }
        }
        const double box_gap = std::sqrt(g2);
        const double ball_gap = std::max(std::sqrt(d2c) - radI[I] - radJ[J], 0.0);
        const double gap = std::max(box_gap, ball_gap);
        const double zeroth = fmaxI[I] + fmaxJ[J] - s * (p2 ? gap * gap : std::pow(gap, p));
        if (!p2) quad = lin2 - s * std::pow(box_gap, p);
        const double first = rmaxI[I] + rmaxJ[J] + lin + quad;
        const double U = std::min(zeroth, first);
        out[J] = U >= thr;
        if (U > rowbest) { rowbest = U; rowarg = J; }
        if (U > cb[J]) { cb[J] = U; ca[J] = I; }
      }
      out[rowarg] = 1;
    }
  }
  for (int64_t J = 0; J < nJ; ++J) {
    double b = NEG;
    int64_t a = 0;
    for (int t = 0; t < nthreads; ++t) {
      if (colbest[(size_t)t * nJ + J] > b) { b = colbest[(size_t)t * nJ + J]; a = colarg[(size_t)t * nJ + J]; }
    }
    keep[a * nJ + J] = 1;
  }
  return 0;
}

// exp and log as vectorised here, for accuracy tests.
void otp_exp_f32(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_poly(x[i]);
}
void otp_log_f32(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = log_poly(x[i]);
}
void otp_exp_f64(const double* x, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_poly(x[i]);
}
void otp_log_f64(const double* x, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = log_poly(x[i]);
}

int otp_abi_version(void) { return 3; }

}  // extern "C"
