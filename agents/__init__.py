"""Stream processors: the likes agent and the logic it folds events with."""

from ._confirm import Confirmer
from ._fold import Fold, fold
from ._likes import Topics, define_agents
from ._positions import Positions

__all__ = ["Confirmer", "Fold", "Positions", "Topics", "define_agents", "fold"]
