// The optimizers: _C.step for any op of fastopt/optimizers.h, and _C.optimizers, the list's
// metadata that the Python spec checks its own against at import.
#include <cmath>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bindings.h"
#include "fastopt/optimizers.h"
#include "fastopt/table_check.h"

namespace fastopt {

namespace {

const RuleInfo* rules() { return rule_infos(Optimizers{}); }

py::list names(int n, const char* const* names, unsigned mask = ~0u) {
  py::list out;
  for (int i = 0; i < n; ++i)
    if ((mask >> i) & 1u) out.append(names[i]);
  return out;
}

}  // namespace

OptimizerCall optimizer_call(const std::string& op, const PtrTable& ptrs,
                             const NumelArray& numel, const ScalarVector& scalars, int elem,
                             const std::string& prefix) {
  int index = 0;
  while (index < Optimizers::size && op != rules()[index].name) ++index;
  if (index == Optimizers::size) {
    std::string known;
    for (int i = 0; i < Optimizers::size; ++i)
      known += (i ? ", " : "") + std::string(rules()[i].name);
    throw py::value_error(prefix + "unknown optimizer '" + op + "' (compiled: " + known + ")");
  }
  const RuleInfo& rule = rules()[index];
  const std::string who = prefix + rule.name + ": ";
  const int n = kHead + rule.n_scalars;
  if (scalars.ndim() != 1 || scalars.shape(0) != n) {
    std::string shape;
    for (py::ssize_t d = 0; d < scalars.ndim(); ++d)
      shape += (d ? ", " : "") + std::to_string(scalars.shape(d));
    throw py::value_error(who + "scalars must be a 1-D float64 array of " + std::to_string(n) +
                          " values (" + std::to_string(kHead) + " head + " +
                          std::to_string(rule.n_scalars) + " op scalars), got shape (" + shape +
                          (scalars.ndim() == 1 ? ",)" : ")"));
  }
  const double* s = scalars.data();
  if (s[kOne] != 1.0)
    throw py::value_error(who + "scalars[0] must be 1.0 (the head: one, sign, l1, prox), got " +
                          std::to_string(s[kOne]));
  const TensorList tl = tensor_list(ptrs, numel, rule.n_slots);
  const std::string why = table_problem(tl, elem, rule.slot_names, rule.required(s));
  if (!why.empty()) throw py::value_error(who + why);
  return OptimizerCall{index, &rule, tl, s};
}

void bind_optim(py::module_& m) {
  m.def(
      "step",
      [](const std::string& op, const PtrTable& ptrs, const NumelArray& numel, int dtype,
         const ScalarVector& scalars, double unscale, const py::object& stochastic_ids,
         uint32_t stochastic_base, const py::object& state_dtypes, const py::object& master) {
        const DType dt = cpu_storage_dtype(dtype);
        const OptimizerCall call = optimizer_call(op, ptrs, numel, scalars, 1, "");
        const std::string who = std::string(call.rule->name) + ": ";
        if (!(unscale > 0.0 && std::isfinite(unscale)))
          throw py::value_error(who + "unscale must be a finite number > 0, got " +
                                std::to_string(unscale));
        const int64_t* ids = nullptr;
        NumelArray id_array;
        if (!stochastic_ids.is_none()) {
          if (!NumelArray::check_(stochastic_ids))
            throw py::type_error(who + "stochastic_ids must be a C-contiguous int64 array");
          id_array = stochastic_ids.cast<NumelArray>();
          if (id_array.ndim() != 1 || id_array.shape(0) != call.tl.n_tensors)
            throw py::value_error(who + "stochastic_ids must hold one id per tensor (" +
                                  std::to_string(call.tl.n_tensors) + ")");
          ids = id_array.data();
        }
        cpu::RowStorage rs;
        std::vector<int> sd;
        const bool k16 = dt == DType::f16 || dt == DType::bf16;
        if (!state_dtypes.is_none()) {
          const auto codes = state_dtypes.cast<std::vector<int>>();
          const size_t n_state = size_t(call.rule->n_slots - 2);
          if (codes.size() != n_state)
            throw py::value_error(who + "state_dtypes must hold one dtype code per state row (" +
                                  std::to_string(n_state) + ")");
          for (const int code : codes) {
            const bool q8 = code == cpu::kQuant8Signed || code == cpu::kQuant8Unsigned;
            const DType d = q8 ? DType::f32 : cpu_storage_dtype(code);
            // float64 is math type and storage at once: it mixes with nothing
            if ((q8 || d != dt) && (d == DType::f64 || dt == DType::f64))
              throw py::type_error(who + "float64 state needs float64 params and vice versa");
            sd.push_back(q8 ? code : int(d));
          }
          rs.state = sd.data();
        }
        PtrTable master_ptrs;
        if (!master.is_none()) {
          if (!PtrTable::check_(master))
            throw py::type_error(who + "master must be a C-contiguous uint64 array");
          master_ptrs = master.cast<PtrTable>();
          if (master_ptrs.ndim() != 1 || master_ptrs.shape(0) != call.tl.n_tensors)
            throw py::value_error(who + "master must hold one address per tensor (" +
                                  std::to_string(call.tl.n_tensors) + ")");
          if (!k16)
            throw py::type_error(who + "master weights are for float16 and bfloat16 params");
          const char* names[] = {"master"};
          const std::string why = table_problem(
              TensorList{master_ptrs.data(), call.tl.numel, call.tl.n_tensors, 1}, 4, names, 1u);
          if (!why.empty()) throw py::value_error(who + why);
          rs.master = master_ptrs.data();
        }
        py::gil_scoped_release nogil;
        [&] {
          FASTOPT_CPU_CALL(step, call.index, call.tl, dt, rs, call.scalars, unscale, ids,
                           stochastic_base)
        }();
      },
      "one step of optimizer `op` over a table of rows (optimizers()[i]['slots']) x tensors, "
      "in place; scalars: the op's float64 scalar vector (head one, sign, l1, prox, then "
      "optimizers()[i]['scalars']); unscale != 1: the gradients are unscaled in place first "
      "(g = g * unscale), and the step takes them so; stochastic_ids (an int64 id per tensor): "
      "16-bit params rounded stochastically, keyed by (stochastic_base, id, element); "
      "state_dtypes: the dtype code of each state row (default: the params'; 4 and 5: 8-bit "
      "quantized signed and nonnegative rows, fastopt/reference/quant8.py); master (a uint64 "
      "address per tensor): float32 master copies of 16-bit params, stepped in their place",
      py::arg("op"), py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),
      py::arg("scalars").noconvert(), py::arg("unscale") = 1.0,
      py::arg("stochastic_ids") = py::none(), py::arg("stochastic_base") = 0u,
      py::arg("state_dtypes") = py::none(), py::arg("master") = py::none());

  m.def(
      "optimizers",
      [] {
        py::list out;
        for (int i = 0; i < Optimizers::size; ++i) {
          const RuleInfo& r = rules()[i];
          py::dict d;
          d["name"] = r.name;
          d["slots"] = names(r.n_slots, r.slot_names);
          d["written"] = names(r.n_slots, r.slot_names, r.written);
          d["scalars"] = names(r.n_scalars, r.scalar_names);
          py::list variants;
          for (int k = 0; k < r.n_variants; ++k)
            variants.append(r.scalar_names[r.variant_index[k] - kHead]);
          d["variants"] = variants;
          d["math"] = r.float64_math ? "float64" : "storage";
          out.append(d);
        }
        return out;
      },
      "the compiled optimizers, in fastopt/optimizers.h's order: dicts of name, slots (table "
      "rows), written (rows stored back), scalars (op scalars after the 4-value head), "
      "variants (flags compiled as separate loops) and math ('float64' or 'storage')");
}

}  // namespace fastopt
