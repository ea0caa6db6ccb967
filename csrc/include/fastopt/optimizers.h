// Every optimizer fastopt compiles: the one list that instantiates the CPU driver (per ISA),
// the CUDA driver and the bindings (_C.step, _C.cuda.step, _C.optimizers). Adding an optimizer
// takes its rule header (rules/<op>.h, see fastopt/rule.h), its #include and its name in the
// list below; the Python spec (fastopt/ops/<op>.py) forms its scalar vector.
#pragma once
#include "fastopt/rule.h"
#include "fastopt/rules/adadelta.h"
#include "fastopt/rules/adagrad.h"
#include "fastopt/rules/adam.h"
#include "fastopt/rules/adamax.h"
#include "fastopt/rules/lion.h"
#include "fastopt/rules/nadam.h"
#include "fastopt/rules/radam.h"
#include "fastopt/rules/rmsprop.h"
#include "fastopt/rules/sgd.h"

namespace fastopt {

using Optimizers = RuleList<Sgd, Adam, Adagrad, Rmsprop, Lion, Nadam, Radam, Adamax, Adadelta>;

}  // namespace fastopt
