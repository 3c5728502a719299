"""data stage: procedural families (families), dataset making (make), mesh import (importer), observations (observe),
the PyTorch dataset (dataset), condition inputs from user files (condition_files), a scan's frame (normalise)."""
