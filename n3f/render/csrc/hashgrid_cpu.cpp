// Multiresolution hash encoding on the CPU: fused forward and backward (OpenMP over samples).
// Same scheme and parameter layout as n3f/render/encoding.py's torch backend and tiny-cuda-nn.
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

struct Level {
  float scale;
  uint32_t resolution;
  uint32_t size;
  int64_t offset;
  bool dense;
  uint32_t mask;  // size - 1 when size is a power of two (then index % size == index & mask), else 0
};

std::vector<Level> make_levels(const torch::Tensor& scales, const torch::Tensor& resolutions,
                               const torch::Tensor& sizes, const torch::Tensor& offsets) {
  auto s = scales.accessor<float, 1>();
  auto r = resolutions.accessor<int64_t, 1>();
  auto z = sizes.accessor<int64_t, 1>();
  auto o = offsets.accessor<int64_t, 1>();
  std::vector<Level> levels(s.size(0));
  for (int64_t l = 0; l < s.size(0); ++l) {
    uint64_t res = (uint64_t)r[l];
    const uint32_t size = (uint32_t)z[l];
    const bool pow2 = size != 0 && (size & (size - 1)) == 0;
    levels[l] = {s[l], (uint32_t)res, size, o[l], res * res * res <= (uint64_t)z[l], pow2 ? size - 1 : 0u};
  }
  return levels;
}

inline uint32_t corner_row(const Level& lv, uint32_t gx, uint32_t gy, uint32_t gz) {
  uint32_t index;
  if (lv.dense) {
    index = gx + gy * lv.resolution + gz * lv.resolution * lv.resolution;
  } else {
    index = (gx * 1u) ^ (gy * 2654435761u) ^ (gz * 805459861u);
  }
  // An integer division per corner costs more than the rest of the corner's arithmetic.
  return lv.mask ? (index & lv.mask) : index % lv.size;
}

template <typename F>
inline void for_each_corner(const float* p, const Level& lv, F&& fn) {
  float pos[3], frac[3];
  uint32_t grid[3];
  for (int d = 0; d < 3; ++d) {
    pos[d] = p[d] * lv.scale + 0.5f;
    float fl = std::floor(pos[d]);
    frac[d] = pos[d] - fl;
    grid[d] = (uint32_t)(int32_t)fl;
  }
  for (int c = 0; c < 8; ++c) {
    float w = 1.f;
    uint32_t g[3];
    for (int d = 0; d < 3; ++d) {
      int bit = (c >> d) & 1;
      w *= bit ? frac[d] : 1.f - frac[d];
      g[d] = grid[d] + bit;
    }
    fn(lv.offset + (int64_t)corner_row(lv, g[0], g[1], g[2]), w);
  }
}

}  // namespace

torch::Tensor hashgrid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor resolutions,
                               torch::Tensor sizes, torch::Tensor offsets) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && table.dtype() == torch::kFloat32, "float32 expected");
  x = x.contiguous();
  table = table.contiguous();
  const auto levels = make_levels(scales, resolutions, sizes, offsets);
  const int64_t n = x.size(0), L = (int64_t)levels.size(), F = table.size(1);
  auto out = torch::empty({n, L * F}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // Level-outer loops keep one level's rows (a few MB) cache-resident while every sample visits it.
  for (int64_t l = 0; l < L; ++l) {
    if (F == 2) {  // the usual width: accumulate in registers (same order of sums as below)
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        float a0 = 0.f, a1 = 0.f;
        for_each_corner(xp + 3 * i, levels[l], [&](int64_t row, float w) {
          const float* t = tp + row * 2;
          a0 += w * t[0];
          a1 += w * t[1];
        });
        float* o = op + i * L * 2 + l * 2;
        o[0] = a0;
        o[1] = a1;
      }
      continue;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float* o = op + i * L * F + l * F;
      for (int64_t f = 0; f < F; ++f) o[f] = 0.f;
      for_each_corner(xp + 3 * i, levels[l], [&](int64_t row, float w) {
        const float* t = tp + row * F;
        for (int64_t f = 0; f < F; ++f) o[f] += w * t[f];
      });
    }
  }
  return out;
}

torch::Tensor hashgrid_backward(torch::Tensor grad_out, torch::Tensor x, int64_t n_rows, torch::Tensor scales,
                                torch::Tensor resolutions, torch::Tensor sizes, torch::Tensor offsets) {
  grad_out = grad_out.contiguous().to(torch::kFloat32);
  x = x.contiguous();
  const auto levels = make_levels(scales, resolutions, sizes, offsets);
  const int64_t n = x.size(0), L = (int64_t)levels.size(), F = grad_out.size(1) / L;
  auto grad = torch::zeros({n_rows, F}, grad_out.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = grad_out.data_ptr<float>();
  float* dp = grad.data_ptr<float>();
  // Threads own whole levels: their rows are disjoint, so no atomics are needed.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t l = 0; l < L; ++l) {
    if (F == 2) {  // the usual width, with the sample's two gradients held in registers
      for (int64_t i = 0; i < n; ++i) {
        const float g0 = gp[i * L * 2 + l * 2], g1 = gp[i * L * 2 + l * 2 + 1];
        for_each_corner(xp + 3 * i, levels[l], [&](int64_t row, float w) {
          float* d = dp + row * 2;
          d[0] += w * g0;
          d[1] += w * g1;
        });
      }
      continue;
    }
    for (int64_t i = 0; i < n; ++i) {
      const float* g = gp + i * L * F + l * F;
      for_each_corner(xp + 3 * i, levels[l], [&](int64_t row, float w) {
        float* d = dp + row * F;
        for (int64_t f = 0; f < F; ++f) d[f] += w * g[f];
      });
    }
  }
  return grad;
}

// Adam over a hash table that skips entries whose gradient is exactly zero (instant-ngp does the
// same: rows no sample touched keep their parameters and moments). One pass over memory.
void sparse_adam_step(torch::Tensor param, torch::Tensor grad, torch::Tensor exp_avg, torch::Tensor exp_avg_sq,
                      double lr, double beta1, double beta2, double eps, int64_t step) {
  TORCH_CHECK(param.is_contiguous() && grad.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous(),
              "contiguous tensors expected");
  const int64_t n = param.numel();
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  const float b1 = (float)beta1, b2 = (float)beta2;
  const float c1 = 1.f - (float)std::pow(beta1, (double)step);
  const float c2 = 1.f - (float)std::pow(beta2, (double)step);
  const float step_size = (float)lr / c1;
  const float sqrt_c2 = std::sqrt(c2);
  const float e = (float)eps;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    if (gi == 0.f) continue;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (std::sqrt(vi) / sqrt_c2 + e);
  }
}

// Ray marching through an occupancy grid (n3f/render/sampling.py's march, same float32 arithmetic
// in the same order, so both give identical samples). Two passes over the rays: count the kept
// samples of each ray, then write them at their offsets; rays are independent (OpenMP over rays).
std::vector<torch::Tensor> march_occupied(torch::Tensor origins, torch::Tensor dirs, torch::Tensor t_near,
                                          torch::Tensor t_far, torch::Tensor n_steps, torch::Tensor offset,
                                          double step, torch::Tensor occupied, torch::Tensor aabb) {
  TORCH_CHECK(origins.dtype() == torch::kFloat32 && dirs.dtype() == torch::kFloat32 && t_near.dtype() == torch::kFloat32 &&
                  t_far.dtype() == torch::kFloat32 && offset.dtype() == torch::kFloat32 && aabb.dtype() == torch::kFloat32,
              "float32 expected");
  TORCH_CHECK(occupied.dtype() == torch::kBool && occupied.dim() == 3, "occupied must be an (R, R, R) bool grid");
  origins = origins.contiguous();
  dirs = dirs.contiguous();
  t_near = t_near.contiguous();
  t_far = t_far.contiguous();
  offset = offset.contiguous();
  n_steps = n_steps.to(torch::kInt64).contiguous();
  occupied = occupied.contiguous();
  aabb = aabb.contiguous();
  const int64_t n = origins.size(0), R = occupied.size(0);
  const float* o = origins.data_ptr<float>();
  const float* d = dirs.data_ptr<float>();
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const float* off = offset.data_ptr<float>();
  const int64_t* ns = n_steps.data_ptr<int64_t>();
  const bool* occ = occupied.data_ptr<bool>();
  const float* box = aabb.data_ptr<float>();
  const float stepf = (float)step, Rf = (float)R, top = (float)(1.0 - 1e-6);
  float lo[3], size[3];
  for (int a = 0; a < 3; ++a) {
    lo[a] = box[a];
    size[a] = box[3 + a] - box[a];
  }
  // the k-th candidate of ray i: its midpoint, and whether it lies in an occupied cell
  auto candidate = [&](int64_t i, int64_t k, float& t) -> bool {
    t = tn[i] + ((float)k + off[i]) * stepf;
    if (!(t < tf[i])) return false;
    int64_t ijk[3];
    for (int a = 0; a < 3; ++a) {
      const float p = o[3 * i + a] + t * d[3 * i + a];
      const float u = (p - lo[a]) / size[a];
      if (!(u >= 0.f && u < 1.f)) return false;
      const float c = std::min(std::max(u, 0.f), top);
      ijk[a] = (int64_t)(c * Rf);
    }
    return occ[(ijk[0] * R + ijk[1]) * R + ijk[2]];
  };
  std::vector<int64_t> counts(n + 1, 0);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = 0;
    float t;
    for (int64_t k = 0; k < ns[i]; ++k) c += candidate(i, k, t);
    counts[i + 1] = c;
  }
  for (int64_t i = 0; i < n; ++i) counts[i + 1] += counts[i];
  auto ray_indices = torch::empty({counts[n]}, torch::kInt64);
  auto t_mid = torch::empty({counts[n]}, torch::kFloat32);
  int64_t* ri = ray_indices.data_ptr<int64_t>();
  float* tm = t_mid.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int64_t at = counts[i];
    float t;
    for (int64_t k = 0; k < ns[i]; ++k) {
      if (candidate(i, k, t)) {
        ri[at] = i;
        tm[at] = t;
        ++at;
      }
    }
  }
  return {ray_indices, t_mid};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("march_occupied", &march_occupied, "march rays through an occupancy grid (CPU, float32)");
  m.def("sparse_adam_step", &sparse_adam_step, "Adam step skipping zero gradients (CPU, float32)");
  m.def("forward", &hashgrid_forward, "hash grid forward (CPU)");
  m.def("backward", &hashgrid_backward, "hash grid backward into a dense table gradient (CPU)");
}
