"""analysis stage: topology, persistence, geometry and set metrics of generated shapes.

`from weightspace.analysis import topology` gives the function `topology(grid, level=0.0)`;
import other names of that module from `weightspace.analysis.topology`.
"""

from weightspace.analysis.topology import Topology, topology

__all__ = ["Topology", "topology"]
