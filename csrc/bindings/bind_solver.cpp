// fastconv._core's size solver (solver/solver.hpp): the search space in, the count, top designs and Pareto
// front out.
#include "common.hpp"
#include "core/geometry.hpp"
#include "solver/solver.hpp"

namespace fastconv::bind {

namespace {

py::int_ big_int(__int128 v) { return py::int_(py::str(to_string(v))); }

py::int_ limbs_to_int(const std::vector<uint64_t>& limbs) {
  py::int_ result(0);
  for (size_t i = limbs.size(); i-- > 0;) {
    result = py::reinterpret_steal<py::int_>(PyNumber_Lshift(result.ptr(), py::int_(64).ptr()));
    result = py::reinterpret_steal<py::int_>(PyNumber_Or(result.ptr(), py::int_(limbs[i]).ptr()));
  }
  return result;
}

Range range_of(std::pair<int64_t, int64_t> r) { return {r.first, r.second}; }

Objective objective_of(const std::string& name, const char* option) {
  if (name == "params") return Objective::params;
  if (name == "macs") return Objective::macs;
  if (name == "kernel") return Objective::kernel;
  if (name == "depth") return Objective::depth;
  fail(std::string(option) + " must be 'params', 'macs', 'kernel' or 'depth', got '" + name + "'");
}

py::list designs_of(const std::vector<Design>& ds) {
  py::list designs;
  for (const Design& d : ds) {
    py::list rows;
    for (const DesignLayer& l : d.layers)
      rows.append(py::make_tuple(l.kind == LayerKind::conv ? "conv" : "pool", l.kernel, l.stride, l.padding, l.dilation,
                                 py::make_tuple(l.in_h, l.in_w), py::make_tuple(l.out_h, l.out_w), l.in_channels,
                                 l.out_channels));
    py::tuple costs(kObjectives);
    for (int o = 0; o < kObjectives; ++o) costs[o] = big_int(d.costs[o]);
    designs.append(py::make_tuple(big_int(d.cost), costs, rows));
  }
  return designs;
}

}  // namespace

void bind_solver(py::module_& m) {
  py::class_<SolveProgress>(m, "SolveProgress")
      .def(py::init<>())
      .def_property_readonly("done", [](const SolveProgress& p) { return p.done.load(); })
      .def_property_readonly("total", [](const SolveProgress& p) { return p.total.load(); })
      .def_property_readonly("phase", [](const SolveProgress& p) { return p.phase.load(); });

  m.def(
      "solve",
      [](std::pair<int64_t, int64_t> input, std::pair<int64_t, int64_t> output,
         const std::vector<std::tuple<std::string, int64_t, int64_t>>& layers, std::pair<int64_t, int64_t> kernel,
         std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> padding, std::pair<int64_t, int64_t> dilation,
         std::pair<int64_t, int64_t> pool_kernel, std::pair<int64_t, int64_t> pool_stride,
         std::pair<int64_t, int64_t> pool_padding, bool exact, bool lossless, const std::string& objective, int64_t top,
         SolveProgress* progress, int64_t min_rf, int64_t max_rf, const std::vector<std::string>& pareto) {
        SolveSpec sp;
        sp.in_h = input.first;
        sp.in_w = input.second;
        sp.out_h = output.first;
        sp.out_w = output.second;
        for (const auto& [kind, cin, cout] : layers) {
          if (kind != "conv" && kind != "pool") fail("block: unknown layer kind '" + kind + "'");
          sp.layers.push_back({kind == "conv" ? LayerKind::conv : LayerKind::pool, cin, cout});
        }
        sp.kernel = range_of(kernel);
        sp.stride = range_of(stride);
        sp.padding = range_of(padding);
        sp.dilation = range_of(dilation);
        sp.pool_kernel = range_of(pool_kernel);
        sp.pool_stride = range_of(pool_stride);
        sp.pool_padding = range_of(pool_padding);
        sp.exact = exact;
        sp.lossless = lossless;
        sp.min_rf = min_rf;
        sp.max_rf = max_rf;
        sp.objective = objective_of(objective, "objective");
        for (const auto& name : pareto) sp.pareto.push_back(objective_of(name, "pareto"));
        sp.top = top;
        SolveResult r;
        {
          py::gil_scoped_release release;
          r = solve(sp, progress);
        }
        return py::make_tuple(limbs_to_int(r.count), designs_of(r.designs), designs_of(r.front));
      },
      py::arg("input"), py::arg("output"), py::arg("layers"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
      py::arg("dilation"), py::arg("pool_kernel"), py::arg("pool_stride"), py::arg("pool_padding"), py::arg("exact"),
      py::arg("lossless"), py::arg("objective"), py::arg("top"), py::arg("progress") = nullptr, py::arg("min_rf") = 0,
      py::arg("max_rf") = 0, py::arg("pareto") = std::vector<std::string>{});
}

}  // namespace fastconv::bind
