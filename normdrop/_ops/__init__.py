"""The operations behind :mod:`normdrop.functional` and the layers: validate, plan, execute.

Each operation module (:mod:`~normdrop._ops.batch_norm`, :mod:`~normdrop._ops.layer_norm`,
:mod:`~normdrop._ops.dropout`, :mod:`~normdrop._ops.fused`) defines

* a frozen *plan*: what does not depend on the data (backend, parameters ready for
  the kernels, options, the optional backend kernels looked up once);
* ``plan(...)``, which validates a public function's arguments and returns a plan,
  and ``make_plan(...)``, which builds one from a layer's own (valid by
  construction) parameters;
* ``forward``/``backward``, which run the kernels for one input and return the
  output and what the backward pass needs;
* the public functions, which validate, plan and execute per call.

A layer makes its plan once (again when its parameters, mode or backend change)
and per call only checks its input. :mod:`~normdrop._ops._inputs` is the one
place that checks array arguments (the NumPy fast path lives there), and
:mod:`~normdrop._ops._arrays` handles ``out=``, overlap and memory layouts.
"""
