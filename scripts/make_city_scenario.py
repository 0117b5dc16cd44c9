#!/usr/bin/env python3
"""Write topologies/starlink-shell1.yaml: Starlink's first shell with ground nodes at the 100 most populous cities.

Shell parameters: SpaceX FCC filing SAT-MOD-20181108-00083 (granted April
2019): 1,584 satellites in 72 planes of 22 at 550 km, 53.0 deg inclination.
The filing does not publish a Walker phasing factor; F = 1 is our choice.
City coordinates: approximate city centres (0.01 deg), urban agglomerations
ranked by population (UN World Urbanization Prospects order, approximately).
User terminals sit 0.25 deg north of their city's ground station so that the
two have distinct level-6 GRCs.

Usage: python3 scripts/make_city_scenario.py > topologies/starlink-shell1.yaml
       python3 scripts/make_city_scenario.py --operators 3 > topologies/starlink-3sno.yaml
       python3 scripts/make_city_scenario.py --phase1 > topologies/starlink-phase1.yaml

With ``--operators N`` (N > 1) the shell is shared by N operators (SNOs)
owning interleaved planes (plane p belongs to operator p mod N), and city i's
ground station and user terminal belong to operator i mod N (users spread
evenly among the operators; spec: inter-sno-mobility-framework §3.3, §4).

``--hypatia DIR`` writes instead the variant that Hypatia (Kassing et al.,
IMC'20) evaluates: TLEs at mean motion 15.19 rev/day (~510 km) written to
DIR/tles.txt with the ``<planes> <sats_per_plane>`` first line Hypatia uses,
ground links allowed up to a slant range of 1,089.686 km (no elevation mask
beyond the horizon), 1 s slices. ``--destinations`` gives every user terminal
a ``destination`` (the ground station of another city) for the
``shortest-path`` attach policy and the stretch measurements
(scripts/bench_fidelity.py).
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime, timezone
from pathlib import Path

CITIES = [
    ("tokyo", 35.68, 139.69), ("delhi", 28.61, 77.21), ("shanghai", 31.23, 121.47), ("saopaulo", -23.55, -46.63),
    ("mexico", 19.43, -99.13), ("cairo", 30.04, 31.24), ("mumbai", 19.08, 72.88), ("beijing", 39.90, 116.41),
    ("dhaka", 23.81, 90.41), ("osaka", 34.69, 135.50), ("newyork", 40.71, -74.01), ("karachi", 24.86, 67.01),
    ("buenosair", -34.60, -58.38), ("chongqing", 29.56, 106.55), ("istanbul", 41.01, 28.98),
    ("kolkata", 22.57, 88.36), ("manila", 14.60, 120.98), ("lagos", 6.52, 3.38), ("rio", -22.91, -43.17),
    ("tianjin", 39.34, 117.36), ("kinshasa", -4.44, 15.27), ("guangzhou", 23.13, 113.26),
    ("losangele", 34.05, -118.24), ("moscow", 55.76, 37.62), ("shenzhen", 22.54, 114.06), ("lahore", 31.55, 74.34),
    ("bangalore", 12.97, 77.59), ("paris", 48.86, 2.35), ("bogota", 4.71, -74.07), ("jakarta", -6.21, 106.85),
    ("chennai", 13.08, 80.27), ("lima", -12.05, -77.04), ("bangkok", 13.76, 100.50), ("seoul", 37.57, 126.98),
    ("nagoya", 35.18, 136.91), ("hyderabad", 17.39, 78.49), ("london", 51.51, -0.13), ("tehran", 35.69, 51.39),
    ("chicago", 41.88, -87.63), ("chengdu", 30.57, 104.07), ("nanjing", 32.06, 118.80), ("wuhan", 30.59, 114.31),
    ("hochiminh", 10.82, 106.63), ("luanda", -8.84, 13.23), ("ahmedabad", 23.02, 72.57),
    ("kualalump", 3.14, 101.69), ("xian", 34.34, 108.94), ("hongkong", 22.32, 114.17), ("dongguan", 23.02, 113.75),
    ("hangzhou", 30.27, 120.16), ("foshan", 23.02, 113.12), ("shenyang", 41.81, 123.43), ("riyadh", 24.71, 46.68),
    ("baghdad", 33.32, 44.36), ("santiago", -33.45, -70.67), ("surat", 21.17, 72.83), ("madrid", 40.42, -3.70),
    ("suzhou", 31.30, 120.58), ("pune", 18.52, 73.86), ("harbin", 45.80, 126.53), ("houston", 29.76, -95.37),
    ("dallas", 32.78, -96.80), ("toronto", 43.65, -79.38), ("daressala", -6.79, 39.21), ("miami", 25.76, -80.19),
    ("belohoriz", -19.92, -43.94), ("singapore", 1.35, 103.82), ("philadelp", 39.95, -75.17),
    ("atlanta", 33.75, -84.39), ("fukuoka", 33.59, 130.40), ("khartoum", 15.50, 32.56), ("barcelona", 41.39, 2.17),
    ("johannesb", -26.20, 28.05), ("stpetersb", 59.93, 30.34), ("qingdao", 36.07, 120.38), ("dalian", 38.91, 121.61),
    ("washingto", 38.91, -77.04), ("yangon", 16.87, 96.20), ("alexandri", 31.20, 29.92), ("jinan", 36.65, 117.12),
    ("guadalaja", 20.66, -103.35), ("abidjan", 5.36, -4.01), ("ankara", 39.93, 32.86), ("zhengzhou", 34.75, 113.63),
    ("chittagon", 22.36, 91.78), ("melbourne", -37.81, 144.96), ("sydney", -33.87, 151.21),
    ("monterrey", 25.69, -100.32), ("nairobi", -1.29, 36.82), ("hanoi", 21.03, 105.85), ("brasilia", -15.79, -47.88),
    ("capetown", -33.92, 18.42), ("jeddah", 21.49, 39.19), ("kabul", 34.56, 69.21), ("rome", 41.90, 12.50),
    ("boston", 42.36, -71.06), ("phoenix", 33.45, -112.07), ("berlin", 52.52, 13.40), ("casablanc", 33.57, -7.59),
    ("kano", 12.00, 8.52),
]
assert len(CITIES) == 100 and len({c[0] for c in CITIES}) == 100

HEADER = """# Starlink shell 1: 72 planes x 22 satellites at 550 km, 53 deg
# (SpaceX FCC filing SAT-MOD-20181108-00083, granted 2019; the filing gives no
# Walker phasing factor: F = 1 is our choice). 100 ground stations at the 100
# most populous cities, a user terminal 0.25 deg north of each.
# Generated by scripts/make_city_scenario.py -- edit that, not this file.
name: starlink-shell1
description: Starlink shell 1 (1,584 satellites), 100 cities
time:
  epoch: 2026-01-01T00:00:00Z
  slice_s: 15
  duration: one_orbit
shells:
  - name: shell1
    altitude_km: 550
    inclination_deg: 53
    planes: 72
    sats_per_plane: 22
    phasing: 1
    pattern: delta
operators:
  - name: starlink
    owner_code: 1
    user_pool: 10.0.0.0/9
    owns: [{shell: 0, planes: all}]
links:
  isl_rate_mbit: 1000
  ground_rate_mbit: 500
  polar_lat_deg: 75
grc:
  level: 6
routing:
  multipath: ecmp
  satellite_destinations: false
"""


def shared_header(n: int) -> tuple[str, list[str]]:
    """HEADER with N operators owning interleaved planes (plane p: operator p mod N)."""
    names = [f"sno-{chr(ord('a') + i)}" for i in range(n)]
    ops = ["operators:"]
    for i, name in enumerate(names):
        planes = ", ".join(str(p) for p in range(i, 72, n))
        ops += [f"  - name: {name}", f"    owner_code: {i + 1}", f"    user_pool: 10.{i * 16}.0.0/12",
                f"    owns: [{{shell: 0, planes: [{planes}]}}]"]
    head = HEADER.replace("name: starlink-shell1\n", f"name: starlink-{n}sno\n")
    head = head.replace("description: Starlink shell 1 (1,584 satellites), 100 cities",
                        f"description: Starlink shell 1 (1,584 satellites), 100 cities, {n} SNOs on interleaved planes")
    head = head.replace("most populous cities, a user terminal 0.25 deg north of each.",
                        f"most populous cities, a user terminal 0.25 deg north of each.\n# Shared by {n} operators: "
                        f"plane p belongs to operator p mod {n}, city i's GS and UT to operator i mod {n}.")
    start = head.index("operators:\n")
    end = head.index("links:\n")
    return head[:start] + "\n".join(ops) + "\n" + head[end:], names


HYPATIA_MEAN_MOTION_REV_DAY = 15.19
HYPATIA_MAX_GSL_KM = 1089.686
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def destination_of(i: int, n: int = len(CITIES)) -> int:
    """The city user terminal i talks to: half the list away (a fixed, geographically mixed pairing)."""
    return (i + n // 2) % n


def hypatia_tles(planes: int = 72, spp: int = 22, phasing: int = 1, inc_deg: float = 53.0,
                 mean_motion_rev_day: float = HYPATIA_MEAN_MOTION_REV_DAY) -> str:
    """A Walker delta shell as Hypatia's tles.txt: '<planes> <spp>', then name / line 1 / line 2 per satellite."""
    from sgp4 import exporter
    from sgp4.api import WGS72, Satrec

    epoch_days = (EPOCH - datetime(1949, 12, 31, tzinfo=timezone.utc)).total_seconds() / 86400.0
    n = mean_motion_rev_day * 2 * math.pi / 1440.0  # rad/min
    out = [f"{planes} {spp}"]
    num = 1
    for p in range(planes):
        raan = math.radians(360.0 * p / planes)
        for j in range(spp):
            m = math.radians((360.0 * j / spp + 360.0 * phasing * p / (spp * planes)) % 360.0)
            r = Satrec()
            r.sgp4init(WGS72, "i", num, epoch_days, 0.0, 0.0, 0.0, 1e-7, 0.0, math.radians(inc_deg), m, n, raan)
            l1, l2 = exporter.export_tle(r)
            out += [f"Starlink-550 {num - 1}", l1, l2]
            num += 1
    return "\n".join(out) + "\n"


def scenario_text(hypatia_dir: Path | None = None, destinations: bool = False, attach_policy: str | None = None,
                  antennas: int | None = None, slices: int | None = None, operators: int = 1) -> str:
    header, names = (HEADER, ["starlink"]) if operators == 1 else shared_header(operators)
    n = len(names)
    head = header.rstrip("\n")
    mask = "min_elevation_deg: 25"
    if hypatia_dir is not None:
        hypatia_dir.mkdir(parents=True, exist_ok=True)
        (hypatia_dir / "tles.txt").write_text(hypatia_tles())
        head = head.replace("name: starlink-shell1\n", "name: starlink-shell1-hypatia\n")
        head = head.replace("""    altitude_km: 550
    inclination_deg: 53
    planes: 72
    sats_per_plane: 22
    phasing: 1
    pattern: delta""", f"""    tle_file: {(hypatia_dir / 'tles.txt').resolve()}
    planes: 72
    sats_per_plane: 22""")
        head = head.replace("slice_s: 15", "slice_s: 1")
        mask = f"min_elevation_deg: 0, max_range_km: {HYPATIA_MAX_GSL_KM}"
    if slices is not None:
        head = head.replace("duration: one_orbit", f"duration: {slices * (1 if hypatia_dir else 15)}")
    if attach_policy:
        head = head.replace("routing:\n", f"routing:\n  attach_policy: {attach_policy}\n")
    ant = f", antennas: {antennas}" if antennas else ""
    out = [head, "ground_stations:"]
    for i, (name, lat, lon) in enumerate(CITIES):
        out.append(f"  - {{name: gs-{name}, lat: {lat}, lon: {lon}, operator: {names[i % n]}, {mask}{ant}}}")
    out.append("user_terminals:")
    for i, (name, lat, lon) in enumerate(CITIES):
        dest = f", destination: gs-{CITIES[destination_of(i)][0]}" if destinations else ""
        out.append(f"  - {{name: ut-{name}, lat: {lat + 0.25:.2f}, lon: {lon}, operator: {names[i % n]}, "
                   f"device: dv-{name}, {mask}{dest}}}")
    out += ["internet:", "  name: inet", "  prefix: 12.0.0.0/24"]
    return "\n".join(out) + "\n"


PHASE1_SHELLS = [  # (name, altitude km, inclination deg, planes, sats per plane), lowest first
    ("s540", 540, 53.2, 72, 22), ("s550", 550, 53.0, 72, 22), ("s560a", 560, 97.6, 6, 58),
    ("s560b", 560, 97.6, 4, 43), ("s570", 570, 70.0, 36, 20)]
PHASE1_CITIES = CITIES[::2]  # every second city of the 100: 50, spread over every continent


def phase1_text() -> str:
    """Starlink's whole first generation (4,408 satellites) with 50 cities' ground stations and user terminals.

    Shells as in SpaceX's FCC modification SAT-MOD-20200417-00037 (granted April
    2021): 550 km / 53 deg 72 x 22, 540 km / 53.2 deg 72 x 22, 570 km / 70 deg
    36 x 20, 560 km / 97.6 deg 6 x 58 and 4 x 43. Listed lowest first, because
    inter-shell Up/Down links pair each shell with the next one in the list
    (emu.snapshot.series). Phasing F = 1 is our choice (the filing gives none).
    """
    total = sum(p * n for _, _, _, p, n in PHASE1_SHELLS)
    assert total == 4408
    out = ["# Starlink Phase I: the five shells of the 4,408-satellite first generation",
           "# (FCC SAT-MOD-20200417-00037, granted April 2021), lowest shell first so that",
           "# Up/Down inter-shell links join each shell to the next one up. Walker delta,",
           "# phasing F = 1 (our choice). 50 cities (every second of the 100 most",
           "# populous): a ground station each, a user terminal 0.25 deg north of it.",
           "# Generated by scripts/make_city_scenario.py --phase1 -- edit that, not this file.",
           "# satellite_destinations: false until planning with satellites as",
           "# destinations is cheap (issue #16).",
           "name: starlink-phase1",
           f"description: Starlink Phase I ({total:,} satellites in 5 shells), {len(PHASE1_CITIES)} cities",
           "time:", "  epoch: 2026-01-01T00:00:00Z", "  slice_s: 15", "  duration: one_orbit", "shells:"]
    for name, alt, inc, planes, spp in PHASE1_SHELLS:
        out += [f"  - name: {name}", f"    altitude_km: {alt}", f"    inclination_deg: {inc}",
                f"    planes: {planes}", f"    sats_per_plane: {spp}", "    phasing: 1", "    pattern: delta"]
    owns = ", ".join(f"{{shell: {i}, planes: all}}" for i in range(len(PHASE1_SHELLS)))
    out += ["operators:", "  - name: starlink", "    owner_code: 1", "    user_pool: 10.0.0.0/9",
            f"    owns: [{owns}]"]
    head = HEADER[HEADER.index("links:\n"):].rstrip("\n")
    out.append(head)
    mask = "min_elevation_deg: 25"
    out.append("ground_stations:")
    for name, lat, lon in PHASE1_CITIES:
        out.append(f"  - {{name: gs-{name}, lat: {lat}, lon: {lon}, operator: starlink, {mask}}}")
    out.append("user_terminals:")
    for name, lat, lon in PHASE1_CITIES:
        out.append(f"  - {{name: ut-{name}, lat: {lat + 0.25:.2f}, lon: {lon}, operator: starlink, "
                   f"device: dv-{name}, {mask}}}")
    out += ["internet:", "  name: inet", "  prefix: 12.0.0.0/24"]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--operators", type=int, default=1, choices=range(1, 7), metavar="N",
                    help="operators sharing the shell on interleaved planes (1..6; default 1: starlink alone)")
    ap.add_argument("--hypatia", type=Path, default=None, metavar="DIR",
                    help="the Hypatia-like variant; its tles.txt goes into DIR")
    ap.add_argument("--destinations", action="store_true", help="give every user terminal a destination")
    ap.add_argument("--attach-policy", default=None)
    ap.add_argument("--antennas", type=int, default=None, help="antennas per ground station (default: the model's)")
    ap.add_argument("--slices", type=int, default=None, help="duration in slices instead of one orbit")
    ap.add_argument("--phase1", action="store_true", help="Starlink Phase I: all five shells, 50 cities")
    a = ap.parse_args()
    if a.phase1:
        print(phase1_text(), end="")
        return
    print(scenario_text(a.hypatia, a.destinations, a.attach_policy, a.antennas, a.slices, a.operators), end="")


if __name__ == "__main__":
    main()
