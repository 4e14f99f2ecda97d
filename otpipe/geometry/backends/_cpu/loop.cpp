// otpipe fused Sinkhorn loop: the whole eps-scaling of a batch of small problems in one call.
//
// One problem per thread (OpenMP, dynamic schedule over the batch). Each problem computes its cost matrix once
// (W_ij = r_ij^p, without the scale: the arithmetic of softmin.cpp's first pass) into a thread-local buffer that
// stays in cache, then runs, with no Python between updates, exactly the updates of otpipe/solvers/loop.py and
// otpipe/problems/problems.py on that problem alone:
//
//   softmin   T(h)_i = -eps * log sum_j exp(h_j - c W_ij),  c = scale / eps   (tiles of TILE columns, running max in
//             double, exp_cut below CUT: softmin.cpp's reduction)
//   init      f = d T_xy(lb), g = d T_yx(la)                   (symmetric: f = d T(la))
//   fixed     per temperature: (f, g) <- ((f + d T_xy(lb + g/eps)) / 2, (g + d T_yx(la + f/eps)) / 2)
//   converging  per temperature, alternating over-relaxed updates with the stopping and stall rules of
//             loop.iterate (its branch for problems under ANDERSON_MIN_POINTS), a problem alone
//   extrapolation  fe = d T_xy(lb + g/eps), ge = d T_yx(la + f/eps) on every row and column, padding included
//
// Padding: rows i >= nx[b] and columns j >= ny[b] have zero weight (log-weight -1e30): their terms are exactly 0
// in every sum (exp_cut), so the loop skips them; the extrapolation computes their potentials from coordinates.
// The caller checks sizes and dtypes (otpipe/geometry/backends/cpu.py, fused_loop).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <omp.h>
#include <vector>

#include "poly.h"

namespace {

using namespace otp;

template <typename T> struct Loop {
  const T* x;   // (B, N, D)
  const T* y;   // (B, M, D) (== x when symmetric)
  const T* a;   // (B, N) weights
  const T* b;   // (B, M)
  const T* la;  // (B, N) log-weights (-1e30 at zero weights)
  const T* lb;  // (B, M)
  const int64_t* nx;  // (B,) rows 0..nx[b) carry every positive weight
  const int64_t* ny;  // (B,)
  int64_t B, N, M, D;
  double scale, p;
  const double* eps;   // (K,) temperatures
  const double* damp;  // (K,) damping factors 1 / (1 + eps / rho) (1: balanced)
  int64_t K;
  int symmetric;
  int converging;
  double tol, stage_tol, overrelax, rho;  // rho <= 0: balanced
  int64_t max_iter, stall, plain_first;
  T* f;   // (B, N) potentials after the loop
  T* g;   // (B, M)
  T* fe;  // (B, N) extrapolated
  T* ge;  // (B, M)
  int64_t* n_iter;  // (B,)
};

constexpr double LOG_ZERO = -1e30;  // log-weight of padding (otpipe.problems.measures.log_weights)
// lanes of a 512-bit vector of T: the row block of the reductions, and the multiple of every row stride
template <typename T> constexpr int64_t vec() { return 64 / sizeof(T); }
template <typename T> OTP_INLINE int64_t pad(int64_t n) { return (n + vec<T>() - 1) / vec<T>() * vec<T>(); }

// columns per chunk of the online reduction: V rows x CHUNK columns of the matrix stay in L1 between its passes
constexpr int64_t CHUNK = 64;

// out_i = d * (-eps) * log sum_j exp(h_j - c A_ij), i < n, j < m, from the matrix packed by blocks of V rows:
// A_ij = P[(i / V) * m * V + j * V + i % V] (each block's V x m panel contiguous, lanes past n zero). The vector
// lanes are rows; a block streams its panel by chunks of CHUNK columns: the chunk's max (the running max of each row grows, its sum rescaled
// in double), then the sum of exp_cut(s - max) (softmin.cpp's terms) over the chunk in T, added in double. The
// matrix is read once from memory per reduction (the second pass over a chunk hits L1); no horizontal reduction,
// no per-row scalar code.
template <typename T>
void softmin(const T* P, int64_t n, int64_t m, const T* h, double eps, double scale, T d, T* out) {
  constexpr int64_t V = vec<T>();
  const T c = (T)(scale / eps);
  const T ne = (T)(-eps);
  for (int64_t i0 = 0; i0 < n; i0 += V) {
    alignas(64) T mx[V];
    alignas(64) T cm[V];
    alignas(64) double acc[V];
    for (int64_t v = 0; v < V; ++v) mx[v] = -std::numeric_limits<T>::infinity(), acc[v] = 0.0;
    for (int64_t j0 = 0; j0 < m; j0 += CHUNK) {
      const int64_t j1 = std::min<int64_t>(m, j0 + CHUNK);
      for (int64_t v = 0; v < V; ++v) cm[v] = mx[v];
      for (int64_t j = j0; j < j1; ++j) {
        const T hj = h[j];
        const T* a = P + i0 * m + j * V;
#pragma omp simd aligned(cm : 64)
        for (int64_t v = 0; v < V; ++v) cm[v] = std::max(cm[v], hj - c * a[v]);
      }
#pragma omp simd aligned(mx, cm, acc : 64)
      for (int64_t v = 0; v < V; ++v) {
        // a larger max rescales the sum so far (exactly 0 -> 0 when it was empty: exp_cut(-inf) = 0)
        const double r = exp_cut<double>((double)mx[v] - (double)cm[v]);
        acc[v] = cm[v] > mx[v] ? acc[v] * r : acc[v];
        mx[v] = cm[v] > mx[v] ? cm[v] : mx[v];
      }
      alignas(64) T t[V];
      for (int64_t v = 0; v < V; ++v) t[v] = T(0);
      for (int64_t j = j0; j < j1; ++j) {
        const T hj = h[j];
        const T* a = P + i0 * m + j * V;
#pragma omp simd aligned(mx, t : 64)
        for (int64_t v = 0; v < V; ++v) t[v] += exp_cut<T>((hj - c * a[v]) - mx[v]);
      }
      for (int64_t v = 0; v < V; ++v) acc[v] += (double)t[v];
    }
    alignas(64) T res[V];
#pragma omp simd aligned(mx, acc, res : 64)
    for (int64_t v = 0; v < V; ++v) res[v] = d * (ne * (T)((double)mx[v] + log_poly(acc[v])));
    const int64_t nv = std::min<int64_t>(V, n - i0);
    for (int64_t v = 0; v < nv; ++v) out[i0 + v] = res[v];
  }
}

// one row stored contiguously: out = d * (-eps) * log sum_j exp(h_j - c w_j) (padding points' potentials)
template <typename T> T softmin_row(const T* w, int64_t m, const T* h, double eps, double scale, T d) {
  const T c = (T)(scale / eps);
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < m; ++j) mx = std::max(mx, h[j] - c * w[j]);
  double acc = 0.0;
  for (int64_t j = 0; j < m; ++j) acc += (double)exp_cut<T>((h[j] - c * w[j]) - mx);
  return d * ((T)(-eps) * (T)((double)mx + std::log(acc)));
}

// W (n x m, row stride ld >= m, zeros past m) = r^p between rows of X (n x D) and rows of Y (m x D), softmin.cpp's arithmetic
template <typename T, int PK>
void cost_rows(const T* X, int64_t n, const T* Y, int64_t m, int64_t D, T hp, T* W, int64_t ld) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = X + i * D;
    T* wi = W + i * ld;
    for (int64_t j = m; j < ld; ++j) wi[j] = T(0);
    for (int64_t j = 0; j < m; ++j) {
      const T* yj = Y + j * D;
      T q = T(0);
      for (int64_t k = 0; k < D; ++k) {
        T dk = xi[k] - yj[k];
        q += dk * dk;
      }
      wi[j] = power_of<T, PK>(q, hp);
    }
  }
}

template <typename T>
void cost_matrix(int pk, const T* X, int64_t n, const T* Y, int64_t m, int64_t D, T hp, T* W, int64_t ld) {
  if (pk == 2) cost_rows<T, 2>(X, n, Y, m, D, hp, W, ld);
  else if (pk == 1) cost_rows<T, 1>(X, n, Y, m, D, hp, W, ld);
  else if (pk == 3) cost_rows<T, 3>(X, n, Y, m, D, hp, W, ld);
  else cost_rows<T, 0>(X, n, Y, m, D, hp, W, ld);
}

// h_j = l_j + v_j / eps  (torch divides by a scalar as a product with its reciprocal)
template <typename T> OTP_INLINE void offsets(const T* l, const T* v, double eps, int64_t m, T* h) {
  const T r = (T)(1.0 / eps);
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) h[j] = l[j] + v[j] * r;
}

// marginal error sum_i w_i |expm1(min((old_i - new_i) / eps, 80))| / sum_i w_i (problems.rel_error)
template <typename T> double rel_error(const T* w, const T* old_, const T* new_, double eps, int64_t n) {
  const T r = (T)(1.0 / eps);
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    T e = std::min((old_[i] - new_[i]) * r, T(80));
    num += (double)(w[i] * std::fabs(std::expm1(e)));
    den += (double)w[i];
  }
  return num / den;
}

// log sum_i exp(l_i - v_i / rho) (the unbalanced translation)
template <typename T> double lse_shift(const T* l, const T* v, double rho, int64_t n) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, (double)l[i] - (double)v[i] / rho);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp((double)l[i] - (double)v[i] / rho - mx);
  return mx + std::log(s);
}

// potentials at padding rows from coordinates: out_i = d (-eps) lse_j(h_j - c r(x_i, y_j)^p), rows i0..i1
template <typename T>
void softmin_coords(int pk, const T* X, int64_t i0, int64_t i1, const T* Y, int64_t m, int64_t D, T hp, const T* h,
                    double eps, double scale, T d, T* out, T* wrow) {
  for (int64_t i = i0; i < i1; ++i) {
    cost_matrix<T>(pk, X + i * D, 1, Y, m, D, hp, wrow, m);
    out[i] = softmin_row<T>(wrow, m, h, eps, scale, d);
  }
}

template <typename T> struct Work {
  std::vector<T> W, WT, hx, hy, tf, tg, wrow;
  void size(int64_t N, int64_t M) {
    W.resize((size_t)(pad<T>(N) * M));
    WT.resize((size_t)(pad<T>(M) * N));
    hx.assign((size_t)pad<T>(N), (T)LOG_ZERO);
    hy.assign((size_t)pad<T>(M), (T)LOG_ZERO);
    tf.resize((size_t)N);
    tg.resize((size_t)M);
    wrow.resize((size_t)pad<T>(std::max(N, M)));
  }
};

template <typename T> void solve_one(const Loop<T>& L, int64_t bi, int pk, Work<T>& w) {
  const int64_t N = L.N, M = L.M, D = L.D;
  const int64_t n = L.nx[bi], m = L.symmetric ? n : L.ny[bi];
  const T hp = (T)(0.5 * L.p);
  const T* X = L.x + bi * N * D;
  const T* Y = L.y + bi * M * D;
  const T* a = L.a + bi * N;
  const T* b = L.symmetric ? a : L.b + bi * M;
  const T* la = L.la + bi * N;
  const T* lb = L.symmetric ? la : L.lb + bi * M;
  T* f = L.f + bi * N;
  T* g = L.symmetric ? nullptr : L.g + bi * M;
  T* W = w.W.data();
  T* WT = w.WT.data();
  const double scale = L.scale;
  // the cost matrix once, packed for both reductions: W by blocks of V rows (the f update: sums over j), WT by
  // blocks of V columns (the g update: sums over i)
  constexpr int64_t V = vec<T>();
  const int64_t np = pad<T>(n), mp = pad<T>(m);
  std::fill(W + (np - V) * m, W + np * m, T(0));
  if (!L.symmetric) std::fill(WT + (mp - V) * n, WT + mp * n, T(0));
  T* wrow = w.wrow.data();
  for (int64_t i = 0; i < n; ++i) {
    cost_matrix<T>(pk, X + i * D, 1, Y, m, D, hp, wrow, m);
    T* px = W + (i / V) * m * V + (i % V);
    for (int64_t j = 0; j < m; ++j) px[j * V] = wrow[j];
    if (!L.symmetric)
      for (int64_t j = 0; j < m; ++j) WT[(j / V) * n * V + i * V + (j % V)] = wrow[j];
  }
  T* hx = w.hx.data();
  T* hy = w.hy.data();
  for (int64_t i = n; i < np; ++i) hx[i] = (T)LOG_ZERO;
  for (int64_t j = m; j < mp; ++j) hy[j] = (T)LOG_ZERO;
  const int64_t K = L.K;

  // init at the first temperature (problems.init)
  {
    const double e0 = L.eps[0];
    const T d0 = (T)L.damp[0];
    std::copy(lb, lb + m, hy);
    std::copy(la, la + n, hx);
    if (L.symmetric) softmin<T>(W, n, n, hx, e0, scale, d0, f);
    else softmin<T>(W, n, m, hy, e0, scale, d0, f);
    if (!L.symmetric) softmin<T>(WT, m, n, hx, e0, scale, d0, g);
  }
  int64_t iters = K;
  if (!L.converging) {
    for (int64_t k = 0; k < K; ++k) {  // averaged_step at every temperature
      const double e = L.eps[k];
      const T d = (T)L.damp[k];
      if (L.symmetric) {
        offsets<T>(la, f, e, n, hx);
        softmin<T>(W, n, n, hx, e, scale, d, w.tf.data());
        for (int64_t i = 0; i < n; ++i) f[i] = T(0.5) * (f[i] + w.tf[i]);
      } else {
        offsets<T>(lb, g, e, m, hy);
        offsets<T>(la, f, e, n, hx);
        softmin<T>(W, n, m, hy, e, scale, d, w.tf.data());
        softmin<T>(WT, m, n, hx, e, scale, d, w.tg.data());
        for (int64_t i = 0; i < n; ++i) f[i] = T(0.5) * (f[i] + w.tf[i]);
        for (int64_t j = 0; j < m; ++j) g[j] = T(0.5) * (g[j] + w.tg[j]);
      }
    }
  } else {
    // loop.iterate, the branch for problems under ANDERSON_MIN_POINTS, on this problem alone
    const int64_t cap = L.max_iter;
    int64_t cnt = 0, nit = 0;
    const int64_t last = K - 1;
    for (int64_t k = 0; k < K; ++k) {
      const double e = L.eps[k];
      const T d = (T)L.damp[k];
      const double target = k == last ? L.tol : std::max(L.tol, L.stage_tol);
      double best = INFINITY, ref = INFINITY;
      int64_t best_at = 0, stage = 0;
      bool plain = false, met_final = false;
      while (cnt < cap - (last - k) || stage == 0) {
        ++cnt;
        ++stage;
        const T omega = (plain || stage <= L.plain_first) ? T(1) : (T)L.overrelax;
        double err;
        if (L.symmetric) {
          offsets<T>(la, f, e, n, hx);
          softmin<T>(W, n, n, hx, e, scale, d, w.tf.data());
          err = rel_error<T>(a, f, w.tf.data(), e, n);
          for (int64_t i = 0; i < n; ++i) f[i] = T(0.5) * (f[i] + w.tf[i]);
        } else {
          offsets<T>(lb, g, e, m, hy);
          softmin<T>(W, n, m, hy, e, scale, d, w.tf.data());
          const double ef = rel_error<T>(a, f, w.tf.data(), e, n);
          if (omega == T(1)) for (int64_t i = 0; i < n; ++i) f[i] = w.tf[i];
          else for (int64_t i = 0; i < n; ++i) f[i] = f[i] + omega * (w.tf[i] - f[i]);
          offsets<T>(la, f, e, n, hx);
          softmin<T>(WT, m, n, hx, e, scale, d, w.tg.data());
          const double eg = rel_error<T>(b, g, w.tg.data(), e, m);
          if (omega == T(1)) for (int64_t j = 0; j < m; ++j) g[j] = w.tg[j];
          else for (int64_t j = 0; j < m; ++j) g[j] = g[j] + omega * (w.tg[j] - g[j]);
          if (L.rho > 0) {
            const double c = 0.5 * L.rho * (lse_shift<T>(la, f, L.rho, n) - lse_shift<T>(lb, g, L.rho, m));
            const T ct = (T)c;
            for (int64_t i = 0; i < n; ++i) f[i] = f[i] + ct;
            for (int64_t j = 0; j < m; ++j) g[j] = g[j] - ct;
          }
          err = std::max(ef, eg);
        }
        if (err > 10.0 * best) plain = true;
        if (err < (k < last ? 0.5 : 0.9) * ref) ref = err, best_at = stage;
        best = std::min(best, err);
        bool met = err <= target;
        if (k == last && met) {
          // the error reported is that of the final update (the extrapolation below): it must meet tol too
          double rep;
          if (L.symmetric) {
            offsets<T>(la, f, e, n, hx);
            softmin<T>(W, n, n, hx, e, scale, d, w.tf.data());
            rep = rel_error<T>(a, f, w.tf.data(), e, n);
          } else {
            offsets<T>(lb, g, e, m, hy);
            offsets<T>(la, f, e, n, hx);
            softmin<T>(W, n, m, hy, e, scale, d, w.tf.data());
            softmin<T>(WT, m, n, hx, e, scale, d, w.tg.data());
            rep = std::max(rel_error<T>(a, f, w.tf.data(), e, n), rel_error<T>(b, g, w.tg.data(), e, m));
          }
          met = rep <= target;
        }
        if (k == last) {
          if (!met_final) nit = met ? cnt - 1 : cnt;
          met_final = met_final || met;
        }
        if (met || stage - best_at > (k < last ? L.stall : 4 * L.stall)) break;
      }
    }
    iters = nit;
  }
  L.n_iter[bi] = iters;

  // extrapolation from the final potentials, every row and column (padding from coordinates)
  const double e = L.eps[K - 1];
  const T d = (T)L.damp[K - 1];
  T* fe = L.fe + bi * N;
  if (L.symmetric) {
    offsets<T>(la, f, e, n, hx);
    softmin<T>(W, n, n, hx, e, scale, d, fe);
    softmin_coords<T>(pk, X, n, N, X, n, D, hp, hx, e, scale, d, fe, w.wrow.data());
    for (int64_t i = n; i < N; ++i) f[i] = fe[i];
  } else {
    T* ge = L.ge + bi * M;
    offsets<T>(lb, g, e, m, hy);
    offsets<T>(la, f, e, n, hx);
    softmin<T>(W, n, m, hy, e, scale, d, fe);
    softmin<T>(WT, m, n, hx, e, scale, d, ge);
    softmin_coords<T>(pk, X, n, N, Y, m, D, hp, hy, e, scale, d, fe, w.wrow.data());
    softmin_coords<T>(pk, Y, m, M, X, n, D, hp, hx, e, scale, d, ge, w.wrow.data());
    for (int64_t i = n; i < N; ++i) f[i] = fe[i];
    for (int64_t j = m; j < M; ++j) g[j] = ge[j];
  }
}

template <typename T> int run_loop(const Loop<T>& L, int nthreads) {
  if (L.B < 0 || L.N < 1 || L.M < 1 || L.D < 1 || L.K < 1 || !(L.p > 0)) return 1;
  if (L.symmetric && L.N != L.M) return 1;
  for (int64_t bi = 0; bi < L.B; ++bi) {
    if (L.nx[bi] < 1 || L.nx[bi] > L.N) return 2;
    if (!L.symmetric && (L.ny[bi] < 1 || L.ny[bi] > L.M)) return 2;
  }
  const int pk = L.p == 2.0 ? 2 : L.p == 1.0 ? 1 : L.p == 1.5 ? 3 : 0;
  if (nthreads < 1) nthreads = 1;
  if (nthreads > L.B) nthreads = (int)std::max<int64_t>(1, L.B);
#pragma omp parallel num_threads(nthreads)
  {
    Work<T> w;
    w.size(L.N, L.M);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bi = 0; bi < L.B; ++bi) solve_one<T>(L, bi, pk, w);
  }
  return 0;
}

template <typename T>
int entry(const T* x, const T* y, const T* a, const T* b, const T* la, const T* lb, const int64_t* nx,
          const int64_t* ny, int64_t B, int64_t N, int64_t M, int64_t D, double scale, double p, const double* eps,
          const double* damp, int64_t K, int symmetric, int converging, double tol, double stage_tol,
          double overrelax, double rho, int64_t max_iter, int64_t stall, int64_t plain_first, int nthreads, T* f,
          T* g, T* fe, T* ge, int64_t* n_iter) {
  Loop<T> L{x, y, a, b, la, lb, nx, ny, B, N, M, D, scale, p, eps, damp, K, symmetric, converging, tol, stage_tol,
            overrelax, rho, max_iter, stall, plain_first, f, g, fe, ge, n_iter};
  return run_loop<T>(L, nthreads);
}

}  // namespace

extern "C" {

int otp_sinkhorn_loop_f32(const float* x, const float* y, const float* a, const float* b, const float* la,
                          const float* lb, const int64_t* nx, const int64_t* ny, int64_t B, int64_t N, int64_t M,
                          int64_t D, double scale, double p, const double* eps, const double* damp, int64_t K,
                          int symmetric, int converging, double tol, double stage_tol, double overrelax, double rho,
                          int64_t max_iter, int64_t stall, int64_t plain_first, int nthreads, float* f, float* g,
                          float* fe, float* ge, int64_t* n_iter) {
  return entry<float>(x, y, a, b, la, lb, nx, ny, B, N, M, D, scale, p, eps, damp, K, symmetric, converging, tol,
                      stage_tol, overrelax, rho, max_iter, stall, plain_first, nthreads, f, g, fe, ge, n_iter);
}

int otp_sinkhorn_loop_f64(const double* x, const double* y, const double* a, const double* b, const double* la,
                          const double* lb, const int64_t* nx, const int64_t* ny, int64_t B, int64_t N, int64_t M,
                          int64_t D, double scale, double p, const double* eps, const double* damp, int64_t K,
                          int symmetric, int converging, double tol, double stage_tol, double overrelax, double rho,
                          int64_t max_iter, int64_t stall, int64_t plain_first, int nthreads, double* f, double* g,
                          double* fe, double* ge, int64_t* n_iter) {
  return entry<double>(x, y, a, b, la, lb, nx, ny, B, N, M, D, scale, p, eps, damp, K, symmetric, converging, tol,
                       stage_tol, overrelax, rho, max_iter, stall, plain_first, nthreads, f, g, fe, ge, n_iter);
}

}  // extern "C"
