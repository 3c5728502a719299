"""experiments stage: the studies, each a function from a typed config to a results folder.

`run_interpolate(InterpolateConfig.small(checkpoint))`, `run_subspace(SubspaceConfig.small(checkpoint))` and
`run_fit(FitConfig.small(checkpoint))` are the demo-sized runs; `run_compare` runs them on several generators.
`summarize(folder)` gives a one-line headline of any results folder.
"""

from weightspace.experiments.compare import CompareConfig, run_compare
from weightspace.experiments.fit import FitConfig, run_fit
from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
from weightspace.experiments.subspace import SubspaceConfig, run_subspace
from weightspace.experiments.summary import summarize

__all__ = ["CompareConfig", "FitConfig", "InterpolateConfig", "SubspaceConfig", "run_compare", "run_fit", "run_interpolate",
           "run_subspace", "summarize"]
