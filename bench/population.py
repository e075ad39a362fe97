# Moved to ca_core/population.py (used by 'certstatus bench load'); kept so old imports work.
from ca_core.population import *  # noqa: F403
from ca_core.population import __all__  # noqa: F401
