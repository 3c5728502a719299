"""The weight-space core: layouts, parameterisations, populations, PCA subspaces, paths and inversion.

Import from the modules (`weightspace.space.frame`, `.layout`, `.parameterisations`, `.population`,
`.subspace`, `.paths`, `.inversion`); the names below are the ones most callers need.
"""

from weightspace.space.frame import Frame
from weightspace.space.layout import Layout, LayoutMismatchError
from weightspace.space.parameterisations import PARAMETERISATIONS, make_parameterisation, parameterisation_from_config
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.store import Population, load_point, save_point
from weightspace.space.subspace import Subspace, fit_direction, fit_subspace

__all__ = [
    "Frame",
    "Layout",
    "LayoutMismatchError",
    "PARAMETERISATIONS",
    "make_parameterisation",
    "parameterisation_from_config",
    "PopulationConfig",
    "build_population",
    "Population",
    "load_point",
    "save_point",
    "Subspace",
    "fit_direction",
    "fit_subspace",
]
