"""data stage: procedural families (families), dataset making (make), mesh import (importer), observations (observe), the PyTorch dataset (dataset)."""
