"""The properties behind :mod:`attnjax.testing` (the conformance kit). Public entry points live in
:mod:`attnjax.testing`; these modules are private:

* :mod:`~attnjax._conformance.common`: what the function claims (:class:`Options`), a drawn problem
  (:class:`Case`), its inputs and masks, and how violations are described and collected
  (:class:`Report`);
* :mod:`~attnjax._conformance.runner`: the compiled programs that return outputs with jacobians, for
  the function under test and for the softmax reference;
* :mod:`~attnjax._conformance.drawn`: every property checked on one drawn shape;
* :mod:`~attnjax._conformance.fixed`: the fixed cases (jit, extreme logits, fully masked rows, low
  precision, mask ranks, approximation).

A violated property raises :class:`~attnjax._conformance.common.Violation` (an AssertionError starting
with ``[property name]`` and showing the counterexample); :class:`~attnjax._conformance.common.Report`
collects them so that one run reports every violated property.
"""
