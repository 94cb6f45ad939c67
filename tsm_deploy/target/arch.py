"""One table of what each device architecture means on this host: the cross toolchain and its Debian
package, the QEMU programs that run it, the guest's Python, the device Python packages PyPI has.

Everything that asks "can we build, bundle or emulate for this arch" asks here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import TsmDeployError


@dataclass(frozen=True)
class ArchSpec:
    """How one device architecture maps onto host tools, Debian and PyPI names."""

    name: str
    gnu_triplet: str  # prefix of the Debian cross toolchain binaries
    cmake_processor: str
    debian_arch: str
    qemu: str | None = None  # qemu-user-static binary that runs this architecture's programs
    qemu_user: str | None = None  # the dynamic qemu-user build (Debian qemu-user), which loads TCG plugins
    default_qemu_cpu: str | None = None  # the CPU QEMU emulates unless the target's mcpu says otherwise
    guest_root: bool = False  # a Debian user space is built for it, so its CPU artifacts can be emulated
    device_packages: bool = False  # the bundle ships the cross-built TVM runtime + Python packages
    wheel_platforms: tuple[str, ...] = ()  # PyPI platform tags to try, newest first

    @property
    def cross_gxx(self) -> str:
        return f"{self.gnu_triplet}-g++"

    @property
    def cross_gxx_package(self) -> str:
        return f"g++-{self.gnu_triplet}"


# The guest's interpreter: Debian bookworm's Python, what Raspberry Pi OS ships.
GUEST_PYTHON = "/usr/bin/python3.11"
QEMU_USER_STATIC_PACKAGE, QEMU_USER_PACKAGE = "qemu-user-static", "qemu-user"

ARCHES: dict[str, ArchSpec] = {
    "x86_64": ArchSpec(name="x86_64", gnu_triplet="x86_64-linux-gnu", cmake_processor="x86_64", debian_arch="amd64"),
    "aarch64": ArchSpec(
        name="aarch64",
        gnu_triplet="aarch64-linux-gnu",
        cmake_processor="aarch64",
        debian_arch="arm64",
        qemu="qemu-aarch64-static",
        qemu_user="qemu-aarch64",
        # The Raspberry Pi 4's core. QEMU's default CPU ("max") has SVE and other extensions the Pi
        # lacks, so without this an illegal-instruction bug in a build's target settings goes unnoticed.
        default_qemu_cpu="cortex-a72",
        guest_root=True,
        device_packages=True,
        wheel_platforms=("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
    ),
    # 32-bit Raspberry Pi OS. PyPI has no armv7 wheel of apache-tvm-ffi 0.1.14, so only the
    # C++ runtime can be built for it today; fetching the Python packages fails clearly.
    "armv7": ArchSpec(
        name="armv7",
        gnu_triplet="arm-linux-gnueabihf",
        cmake_processor="armv7l",
        debian_arch="armhf",
        qemu="qemu-arm-static",
        wheel_platforms=("manylinux_2_28_armv7l", "manylinux_2_17_armv7l", "manylinux2014_armv7l"),
    ),
}

# Debian package that provides each cross compiler, for the error message when one is missing.
CROSS_COMPILER_PACKAGES = {spec.cross_gxx: spec.cross_gxx_package for spec in ARCHES.values()}


def arch_spec(arch: str) -> ArchSpec:
    try:
        return ARCHES[arch]
    except KeyError:
        raise ValueError(f"unsupported device architecture {arch!r}; known: {sorted(ARCHES)}") from None


# Cortex cores QEMU emulates by name; a target whose mcpu is one of them is emulated as that core.
QEMU_CORTEX_CPUS = ("cortex-a53", "cortex-a57", "cortex-a72")


def emulated_cpu(target: Mapping[str, Any]) -> str:
    """The CPU QEMU emulates for ``target`` (a manifest's target section): its ``mcpu`` when QEMU knows
    that core (jetson-nano-cpu: cortex-a57), else the arch's default (cortex-a72)."""
    mcpu = (target.get("tvm_target") or {}).get("mcpu")
    if mcpu in QEMU_CORTEX_CPUS:
        return mcpu
    return ARCHES[target["arch"]].default_qemu_cpu or "max"


def require_emulatable(target: Mapping[str, Any], what: str) -> ArchSpec:
    """The arch of a CPU artifact's ``target`` (manifest section) that this host can emulate, else one
    line saying why not. ``what``: the command or option asking (``--emulate``)."""
    spec = ARCHES.get(target.get("arch", ""))
    if spec is None or not spec.guest_root or target.get("device") != "cpu":
        emulated = ", ".join(s.name for s in ARCHES.values() if s.guest_root)
        raise TsmDeployError(
            f"{what} runs {emulated} CPU artifacts (e.g. --target rasp4); this one is for "
            f"{target.get('name')} ({target.get('arch')}, {target.get('device')})"
        )
    return spec
