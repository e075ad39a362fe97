"""The deadline day's load curve, and how the relying-party load is split between generators.

Shared by the Locust suite (bench/locustfile.py), the fast generator (bench/fastgen.py) and
the runner (bench/tax_season.py), so that all three follow the same curve second by second.
Pure functions, no I/O.

TAX_SEASON.md: x1 is 100 checks/s in the busiest hour of the deadline day (May 31, filing
closes at midnight); x50 (5,000/s) is the bound for every resident with a chip ID card.
"""

from __future__ import annotations

from typing import Final

#: Checks/s at the busiest hour for scale 1.
PEAK_RPS_X1: Final = 100.0

#: Share of each hour of the deadline day in its checks, relative to the busiest hour
#: (23:00): quiet at night, a working-day plateau, and the evening rush of those who file
#: at the last minute.
DAY_PROFILE: Final = (
    0.10, 0.05, 0.03, 0.02, 0.02, 0.03, 0.08, 0.20, 0.40, 0.55, 0.60, 0.60,
    0.55, 0.55, 0.60, 0.60, 0.55, 0.50, 0.55, 0.65, 0.75, 0.85, 0.95, 1.00,
)  # fmt: skip


def target_rps(t_s: float, scale: float, minutes: float) -> float:
    """Relying-party checks/s planned at ``t_s`` seconds into the day compressed into ``minutes``."""
    hour_s = minutes * 60 / 24
    hour = min(23, max(0, int(t_s / hour_s)))
    return PEAK_RPS_X1 * scale * DAY_PROFILE[hour]


def locust_users(target: float, share: float, per_user_rps: float) -> int:
    """Locust's relying-party users for a total ``target``: its ``share`` of it, at
    ``per_user_rps`` each, and never fewer than one (so Locust always checks a sample)."""
    return max(1, round(target * share / per_user_rps))


def split(t_s: float, *, scale: float, minutes: float, share: float, per_user_rps: float) -> tuple[float, float]:
    """``(locust_rps, fastgen_rps)`` planned at ``t_s``: Locust its users' worth, the fast
    generator the rest of the target (nothing when ``share`` is 1, Locust alone)."""
    target = target_rps(t_s, scale, minutes)
    locust = locust_users(target, share, per_user_rps) * per_user_rps
    return locust, (max(0.0, target - locust) if share < 1.0 else 0.0)
