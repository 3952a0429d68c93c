"""The network only: layers, rotary positions, time embedders, blocks and the MF-MJT network."""

from mfmjt.config import VARIANTS, NetworkConfig
from mfmjt.model.network import Conditions, MFMJTNetwork

__all__ = ["VARIANTS", "Conditions", "MFMJTNetwork", "NetworkConfig"]
