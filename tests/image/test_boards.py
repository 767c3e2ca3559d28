"""Every board the image is for, checked from the built image alone (issue
25): no hardware, no emulator. For each board (Pi 3 B, B+ and A+, Zero 2
W, Pi 4 B, Pi 400, Pi 5 with the C0 and with the D0 chip), read from the
card:

- the boot partition holds the files its firmware loads, under the names it
  looks for (bootcode.bin and start*.elf where the firmware is not in an
  EEPROM; the device tree under the firmware's upstream name);
- config.txt, as that board's firmware reads it (its [pi*] sections), starts
  U-Boot in 64 bits with no device_tree= line, and U-Boot knows the board's
  SD host; the boot script names a serial console the board's tree has (the
  kernel's command line is the boot script's: there is no cmdline.txt);
- the kernel in slot A carries the drivers for the board's SD card,
  Ethernet, USB, Wi-Fi and watchdog (named below, each matched to the node
  of the board's tree it drives), those for the SD card in the initrd, and
  the Wi-Fi chip's firmware is in the system.

Run by image/test, before the emulated boots; `image/test -k boards` runs
only this.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

IMAGE = os.environ.get("LEITNER_IMAGE")
WORK = Path(__file__).resolve().parents[2] / "target" / "image-boards"
pytestmark = pytest.mark.skipif(not IMAGE, reason="run by image/test")


# ---- the boards ----

@dataclass
class Driver:
    """A driver the board needs: `module` (its file name without .ko*, or
    KERNEL for one that is always built in), matched to a node of the
    board's tree by `compatible`, or to a device on a bus (USB, PCI, SDIO,
    platform) by the start of a modalias."""
    module: str
    compatible: str | None = None
    modalias: str | None = None


@dataclass
class Board:
    name: str
    sections: tuple[str, ...]  # the config.txt sections its firmware reads
    tree: str  # the device tree its firmware loads
    model: str  # the tree's first compatible
    firmware: tuple[str, ...]  # files its firmware loads from the card
    sd: list[Driver]  # needed before the root is mounted: in the initrd
    ethernet: list[Driver]
    usb: list[Driver]
    wifi: list[Driver]
    wifi_firmware: tuple[str, ...]  # under /usr/lib/firmware/brcm
    console: str = "ttyS1"  # the serial console the boot script names for it
    uart_alias: str = "serial1"  # the tree's alias for that UART
    chip: str | None = None  # a compatible only this chip revision's tree has

    @property
    def pi5(self) -> bool:
        return "pi5" in self.sections


def wifi_files(chip: str, board: str | None) -> tuple[str, ...]:
    """The files brcmfmac loads for `chip`: its firmware, its regulatory
    blob, and the board's settings (the chip's generic ones without one)."""
    nvram = f"brcmfmac{chip}-sdio.{board}.txt" if board else f"brcmfmac{chip}-sdio.txt"
    return (f"brcmfmac{chip}-sdio.bin", f"brcmfmac{chip}-sdio.clm_blob", nvram)


PI3_FIRMWARE = ("bootcode.bin", "start.elf", "fixup.dat")
PI4_FIRMWARE = ("start4.elf", "fixup4.dat")
KERNEL = "the kernel"
# The power manager's driver makes the watchdog device; the A/B boot's
# fallback from a hung system rests on it.
WATCHDOG = [Driver(KERNEL, "brcm,bcm2835-pm-wdt"), Driver("bcm2835_wdt", modalias="platform:bcm2835-wdt")]
BRCMFMAC_43430 = Driver("brcmfmac", "brcm,bcm4329-fmac", "sdio:c*v02D0dA9A6")
BRCMFMAC_4345 = Driver("brcmfmac", "brcm,bcm4329-fmac", "sdio:c*v02D0d4345")
# The SDIO host the Wi-Fi chip of the Pi 3, Zero 2 W and Pi 4 hangs off.
WIFI_HOST = Driver("sdhci-iproc", "brcm,bcm2835-sdhci")
PI3_SD = [Driver("bcm2835", "brcm,bcm2835-sdhost")]
PI3_USB = [Driver("dwc2", "brcm,bcm2835-usb")]
PI4_SD = [Driver("sdhci-iproc", "brcm,bcm2711-emmc2")]
PI4_ETHERNET = [Driver("genet", "brcm,bcm2711-genet-v5"), Driver("mdio-bcm-unimac", "brcm,genet-mdio-v5"),
                Driver("broadcom")]
PI4_USB = [Driver("pcie-brcmstb", "brcm,bcm2711-pcie"), Driver("xhci-pci", modalias="pci:v*d*sv*sd*bc0Csc03i30"),
           Driver("reset-raspberrypi", "raspberrypi,firmware-reset")]


def pi5(chip: str) -> Board:
    d0 = chip == "D0"
    pinctrl = "brcm,bcm2712d0-pinctrl" if d0 else "brcm,bcm2712c0-pinctrl"
    aon = "brcm,bcm2712d0-aon-pinctrl" if d0 else "brcm,bcm2712c0-aon-pinctrl"
    return Board(
        name=f"Pi 5 {chip}", sections=("pi5",),
        # The firmware's name for the D0 tree; the kernel's is bcm2712-d-rpi-5-b.dtb.
        tree="bcm2712d0-rpi-5-b.dtb" if d0 else "bcm2712-rpi-5-b.dtb",
        model="raspberrypi,5-model-b", firmware=(), chip=pinctrl,
        # The card's host, its pins, its card-detect line and its 1.8/3.3 V switch.
        sd=[Driver("sdhci-brcmstb", "brcm,bcm2712-sdhci"), Driver("pinctrl-brcmstb-bcm2712", pinctrl),
            Driver("pinctrl-brcmstb-bcm2712", aon), Driver("gpio-brcmstb", "brcm,brcmstb-gpio"),
            Driver("gpio-regulator", "regulator-gpio")],
        # Ethernet is on the RP1 chip, behind PCIe.
        ethernet=[Driver("pcie-brcmstb", "brcm,bcm2712-pcie"), Driver("irq-bcm2712-mip", "brcm,bcm2712-mip"),
                  Driver("rp1_pci", "pci1de4,1", "pci:v00001DE4d00000001"),
                  Driver("clk-rp1", "raspberrypi,rp1-clocks"), Driver("pinctrl-rp1", "raspberrypi,rp1-gpio"),
                  Driver("macb", "raspberrypi,rp1-gem"), Driver("broadcom")],
        usb=[Driver("dwc3", "snps,dwc3"), Driver("xhci-plat-hcd")],
        wifi=[Driver("sdhci-brcmstb", "brcm,bcm2712-sdhci"), BRCMFMAC_4345],
        wifi_firmware=wifi_files("43455", "raspberrypi,5-model-b"),
        console="ttyAMA10", uart_alias="serial10")


BOARDS = [
    Board("Pi 3 B", ("pi3",), "bcm2837-rpi-3-b.dtb", "raspberrypi,3-model-b", PI3_FIRMWARE,
          sd=PI3_SD, usb=PI3_USB,
          ethernet=PI3_USB + [Driver("smsc95xx", "usb424,ec00", "usb:v0424pEC00")],
          wifi=[WIFI_HOST, BRCMFMAC_43430], wifi_firmware=wifi_files("43430", "raspberrypi,3-model-b")),
    Board("Pi 3 B+", ("pi3", "pi3+"), "bcm2837-rpi-3-b-plus.dtb", "raspberrypi,3-model-b-plus", PI3_FIRMWARE,
          sd=PI3_SD, usb=PI3_USB,
          ethernet=PI3_USB + [Driver("lan78xx", "usb424,7800", "usb:v0424p7800")],
          wifi=[WIFI_HOST, BRCMFMAC_4345], wifi_firmware=wifi_files("43455", "raspberrypi,3-model-b-plus")),
    # No Ethernet.
    Board("Pi 3 A+", ("pi3", "pi3+"), "bcm2837-rpi-3-a-plus.dtb", "raspberrypi,3-model-a-plus", PI3_FIRMWARE,
          sd=PI3_SD, usb=PI3_USB, ethernet=[],
          wifi=[WIFI_HOST, BRCMFMAC_4345], wifi_firmware=wifi_files("43455", "raspberrypi,3-model-a-plus")),
    # No Ethernet socket: a USB adapter on its USB port (otg: host when an
    # adapter is plugged in), usually a Realtek, ASIX or CDC one. Its Wi-Fi
    # is a BCM43430 or, on newer boards, a CYW43436, whose firmware
    # (brcmfmac43430b0-sdio) Debian does not ship: the first boot says so
    # (image/files/usr/lib/leitner-image/wifi-check).
    Board("Zero 2 W", ("pi0", "pi02"), "bcm2837-rpi-zero-2-w.dtb", "raspberrypi,model-zero-2-w", PI3_FIRMWARE,
          sd=PI3_SD, usb=PI3_USB,
          ethernet=PI3_USB + [Driver("r8152", modalias="usb:v0BDAp8152"),
                              Driver("ax88179_178a", modalias="usb:v0B95p1790"), Driver("cdc_ether")],
          wifi=[WIFI_HOST, BRCMFMAC_43430], wifi_firmware=wifi_files("43430", "raspberrypi,model-zero-2-w")),
    Board("Pi 4 B", ("pi4",), "bcm2711-rpi-4-b.dtb", "raspberrypi,4-model-b", PI4_FIRMWARE,
          sd=PI4_SD, ethernet=PI4_ETHERNET, usb=PI4_USB,
          wifi=[WIFI_HOST, BRCMFMAC_4345], wifi_firmware=wifi_files("43455", "raspberrypi,4-model-b")),
    # Its Wi-Fi chip answers as a 43456 (raspi-firmware ships its files).
    Board("Pi 400", ("pi4", "pi400"), "bcm2711-rpi-400.dtb", "raspberrypi,400", PI4_FIRMWARE,
          sd=PI4_SD, ethernet=PI4_ETHERNET, usb=PI4_USB,
          wifi=[WIFI_HOST, BRCMFMAC_4345], wifi_firmware=wifi_files("43456", None)),
    pi5("C0"),
    pi5("D0"),
]


# ---- reading the card ----

class Card:
    """The image, decompressed once: its boot partition's files, and slot
    A's kernel, modules, firmware and initrd."""

    def __init__(self, image: str, work: Path):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        raw = work / "card.img"
        with lzma.open(image) as src, open(raw, "wb") as out:
            shutil.copyfileobj(src, out, 16 << 20)
        with open(raw, "rb") as f:
            mbr = f.read(512)
        parts = [struct.unpack_from("<II", mbr, 446 + 16 * i + 8) for i in range(4)]
        boot_start = parts[0][0] * 512
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        self.fat = work / "fat"
        self.fat.mkdir()
        subprocess.run(["mcopy", "-s", "-n", "-i", f"{raw}@@{boot_start}", "::*", str(self.fat)],
                       check=True, env=env, capture_output=True)
        slot = work / "slot-a.img"
        start, size = parts[1]
        subprocess.run(["dd", f"if={raw}", f"of={slot}", "bs=4M", f"skip={start * 512}", f"count={size * 512}",
                        "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"], check=True)
        raw.unlink()
        self.root = work / "root"
        for path in ("/boot", "/usr/lib/modules", "/usr/lib/firmware/brcm", "/usr/lib/firmware/cypress"):
            into = self.root / Path(path).parent.relative_to("/")
            into.mkdir(parents=True, exist_ok=True)
            subprocess.run(["debugfs", "-R", f"rdump {path} {into}", str(slot)], check=True, capture_output=True)
        subprocess.run(["debugfs", "-R", f"dump /usr/lib/leitner-image.manifest {self.root / 'manifest'}",
                        str(slot)], check=True, capture_output=True)
        self.packages = dict(line.split("\t", 1) for line in (self.root / "manifest").read_text().splitlines())
        slot.unlink()
        initrd = (self.root / "boot" / "initrd.img").resolve()
        kernel = (self.root / "boot" / "vmlinuz").resolve()
        self.kernel_version = kernel.name.removeprefix("vmlinuz-")
        self.kernel_image = kernel.read_bytes()
        self.modules = self.root / "usr/lib/modules" / self.kernel_version
        self.initrd_files = cpio_names(initrd.read_bytes())
        self.aliases = read_aliases(self.modules)
        self.builtin = {module_name(line) for line in (self.modules / "modules.builtin").read_text().split()}
        # module -> the modules it loads first
        self.dep = {}
        for line in (self.modules / "modules.dep").read_text().splitlines():
            path, _, deps = line.partition(":")
            self.dep[module_name(path)] = [module_name(d) for d in deps.split()]
        self.initrd_modules = {module_name(n) for n in self.initrd_files if re.search(r"\.ko(\.\w+)?$", n)}

    def file(self, path: str, hops: int = 8) -> bool:
        """Whether PATH is a file in the slot, following links as the
        board would (an absolute link points into the slot, not into this
        machine)."""
        here = self.root / path.lstrip("/")
        if here.is_symlink() and hops > 0:
            target = os.readlink(here)
            return self.file(target if target.startswith("/") else
                             os.path.normpath(os.path.join(os.path.dirname(path), target)), hops - 1)
        return here.is_file()

    def tree(self, name: str) -> "Node":
        return parse_fdt((self.fat / name).read_bytes())


def module_name(path: str) -> str:
    """kernel/drivers/mmc/host/sdhci-brcmstb.ko.xz -> sdhci_brcmstb, the
    name modules.alias and the kernel use."""
    return re.sub(r"\.ko(\.\w+)?$", "", path.rsplit("/", 1)[-1]).replace("-", "_")


def read_aliases(modules: Path) -> list[tuple[str, str]]:
    """(modalias pattern, module) of the modules and of the drivers built
    into the kernel."""
    aliases = []
    for line in (modules / "modules.alias").read_text().splitlines():
        if line.startswith("alias "):
            _, pattern, module = line.split(" ", 2)
            aliases.append((pattern, module.replace("-", "_")))
    for entry in (modules / "modules.builtin.modinfo").read_bytes().split(b"\0"):
        key, _, value = entry.decode(errors="replace").partition("=")
        if key.endswith(".alias"):
            aliases.append((value, key[: -len(".alias")].replace("-", "_")))
    return aliases


def cpio_names(data: bytes) -> set[str]:
    """The file names in an initramfs: uncompressed newc archives, then one
    compressed with zstd, xz or gzip."""
    names: set[str] = set()
    pos = 0
    while pos < len(data):
        if data[pos:pos + 6] in (b"070701", b"070702"):
            while True:
                header = data[pos:pos + 110]
                namesize = int(header[94:102], 16)
                filesize = int(header[54:62], 16)
                name = data[pos + 110:pos + 110 + namesize - 1].decode(errors="replace")
                pos = (pos + 110 + namesize + 3) & ~3
                pos = (pos + filesize + 3) & ~3
                if name == "TRAILER!!!":
                    break
                names.add(name.removeprefix("./"))
            while pos < len(data) and data[pos] == 0:
                pos += 1
            continue
        rest = data[pos:]
        if rest[:4] == b"\x28\xb5\x2f\xfd":
            inner = subprocess.run(["zstd", "-dc"], input=rest, capture_output=True, check=True).stdout
        elif rest[:6] == b"\xfd7zXZ\x00":
            inner = lzma.decompress(rest)
        elif rest[:2] == b"\x1f\x8b":
            import gzip

            inner = gzip.decompress(rest)
        else:
            raise AssertionError(f"initrd: unknown data at byte {pos}: {rest[:8]!r}")
        return names | cpio_names(inner)
    return names


@dataclass
class Node:
    name: str
    props: dict[str, bytes]
    children: list["Node"]

    def strings(self, prop: str) -> list[str]:
        value = self.props.get(prop, b"")
        return [s.decode() for s in value.rstrip(b"\0").split(b"\0")] if value else []

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def enabled(self) -> bool:
        return self.strings("status") in ([], ["okay"], ["ok"])


def parse_fdt(blob: bytes) -> Node:
    """A flattened device tree (the .dtb format) as nodes and raw
    properties."""
    magic, _, off_struct, off_strings = struct.unpack_from(">IIII", blob, 0)
    assert magic == 0xD00DFEED, "not a device tree"
    pos = off_struct
    stack: list[Node] = []
    root = None
    while True:
        (token,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if token == 1:  # begin node
            end = blob.index(b"\0", pos)
            node = Node(blob[pos:end].decode(), {}, [])
            pos = (end + 4) & ~3
            if stack:
                stack[-1].children.append(node)
            else:
                root = node
            stack.append(node)
        elif token == 2:  # end node
            stack.pop()
        elif token == 3:  # property
            length, nameoff = struct.unpack_from(">II", blob, pos)
            pos += 8
            name = blob[off_strings + nameoff:blob.index(b"\0", off_strings + nameoff)].decode()
            stack[-1].props[name] = blob[pos:pos + length]
            pos = (pos + length + 3) & ~3
        elif token == 4:  # nop
            continue
        elif token == 9:  # end
            return root
        else:
            raise AssertionError(f"device tree: bad token {token}")


def config_for(text: str, sections: tuple[str, ...]) -> dict[str, str]:
    """config.txt as a board's firmware reads it: lines under [all] and
    under the filters naming this board; the last value of a key wins."""
    settings: dict[str, str] = {}
    active = True
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):  # the firmware knows no comment after a setting
            continue
        if line.startswith("["):
            name = line.strip("[]").lower()
            active = name == "all" or name in sections
            continue
        if active:
            # key=value, or "initramfs FILE ADDRESS"
            key, sep, value = line.partition("=") if "=" in line else line.partition(" ")
            settings[key.strip()] = value.strip()
    return settings


# ---- the checks ----

@pytest.fixture(scope="module")
def card():
    return Card(IMAGE, WORK)


def test_the_kernel_carries_the_pi_5s_drivers(card):
    """The kernel is one that carries the Pi 5's drivers (trixie-backports'),
    and its initrd is where the boot script loads it."""
    config = (card.modules / "config").read_text() if (card.modules / "config").exists() else \
        (card.root / "boot" / f"config-{card.kernel_version}").read_text()
    for option in ("CONFIG_MMC_SDHCI_BRCMSTB", "CONFIG_MISC_RP1", "CONFIG_PINCTRL_BCM2712", "CONFIG_MACB"):
        assert re.search(rf"^{option}=[ym]$", config, re.M), f"kernel {card.kernel_version}: {option} is off"
    assert (card.root / "boot" / "initrd.img").is_symlink() and (card.root / "boot" / "vmlinuz").is_symlink()


def test_rauc_reads_this_kernels_verity_status(card):
    """From Linux 6.19 on, dm-verity's status has a second field; RAUC
    before 1.15.1 then refuses every bundle (image/rauc). The image's RAUC
    must be one that reads it."""
    rauc = card.packages["rauc"]
    fixed = "+leitner" in rauc or tuple(int(x) for x in re.findall(r"\d+", rauc)[:3]) >= (1, 15, 1)
    assert fixed, f"rauc {rauc} with kernel {card.kernel_version}: updates would be refused"


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_the_card_suits_the_board(card, board: Board):
    problems: list[str] = []
    found: list[str] = []

    # The firmware's files, and the tree under the name it looks for.
    for name in board.firmware + (board.tree, "u-boot.bin", "boot.scr", "config.txt"):
        if not (card.fat / name).is_file():
            problems.append(f"boot partition: no {name}")
    if problems:
        pytest.fail("\n".join(problems))
    tree = card.tree(board.tree)
    model = tree.strings("compatible")
    if not model or model[0] != board.model:
        problems.append(f"{board.tree}: a tree for {model}, not {board.model}")
    compatibles = {c: node for node in tree.walk() if node.enabled for c in node.strings("compatible")}
    if board.chip and board.chip not in compatibles:
        problems.append(f"{board.tree}: not the tree for this chip ({board.chip} missing): its kernel would panic")
    if board.pi5:
        # Without a bcm2712 tree the Pi 5 firmware refuses to start at all.
        assert any(p.name.startswith("bcm2712") for p in card.fat.iterdir())
        if board.chip and "d0" in board.chip:
            kernel_name = (card.fat / "bcm2712-d-rpi-5-b.dtb").read_bytes()
            if kernel_name != (card.fat / board.tree).read_bytes():
                problems.append("bcm2712d0-rpi-5-b.dtb is not the kernel's bcm2712-d-rpi-5-b.dtb")

    # config.txt as this board reads it.
    config = config_for((card.fat / "config.txt").read_text(), board.sections)
    if config.get("kernel") != "u-boot.bin":
        problems.append(f"config.txt: kernel={config.get('kernel')}, not u-boot.bin")
    if not board.pi5 and config.get("arm_64bit") != "1":
        problems.append("config.txt: no arm_64bit=1")
    if board.pi5 and config.get("enable_uart") != "0":
        problems.append("config.txt: the Pi 5 has its UART on (a floating line stops U-Boot at its prompt)")
    if config.get("upstream_kernel") != "1":
        problems.append("config.txt: no upstream_kernel=1 (the firmware would look for its own trees' names)")
    for key in ("device_tree", "os_prefix", "initramfs", "cmdline"):
        if key in config:
            problems.append(f"config.txt: {key}= is set: the firmware must pick the tree and U-Boot the rest")
    if (card.fat / "cmdline.txt").exists():
        problems.append("cmdline.txt: present, but the boot script sets the command line")
    uboot = (card.fat / "u-boot.bin").read_bytes()
    sd_host = board.sd[0].compatible
    if sd_host.encode() not in uboot:
        problems.append(f"u-boot.bin: has no driver for this board's SD host ({sd_host})")
    script = (card.fat / "boot.scr").read_bytes()
    if f"console={board.console},115200".encode() not in script:
        problems.append(f"boot.scr: never names console {board.console}")
    aliases = next((n for n in tree.children if n.name == "aliases"), None)
    if aliases is None or board.uart_alias not in aliases.props:
        problems.append(f"{board.tree}: no {board.uart_alias} (the UART of console {board.console})")
    if board.uart_alias != "serial10" and aliases is not None and "serial10" in aliases.props:
        problems.append(f"{board.tree}: has serial10, which the boot script takes for a Pi 5")
    if board.uart_alias == "serial10" and b"/aliases serial10" not in script:
        problems.append("boot.scr: does not tell the Pi 5 by its serial10 alias")

    # The drivers, each matched to this board's tree or bus, in the system;
    # the SD card's (with what they load) in the initrd too.
    for function, drivers in (("SD card", board.sd), ("Ethernet", board.ethernet), ("USB", board.usb),
                              ("Wi-Fi", board.wifi), ("watchdog", WATCHDOG)):
        for driver in drivers:
            name = driver.module.replace("-", "_")
            where = "built in" if name in card.builtin or driver.module == KERNEL else None
            if where is None and name in card.dep:
                where = "module"
            if where is None:
                problems.append(f"{function}: kernel {card.kernel_version} has no {driver.module}")
                continue
            if driver.compatible and driver.compatible not in compatibles:
                problems.append(f"{function}: {board.tree} has no enabled node {driver.compatible}")
            if driver.modalias:
                if not any(m == name and p.startswith(driver.modalias) for p, m in card.aliases):
                    problems.append(f"{function}: {driver.module} does not match {driver.modalias}")
            elif driver.compatible and where == "built in":
                # Built-in drivers' match tables are in the kernel image
                # (modules.builtin.modinfo lists no aliases).
                if driver.compatible.encode() + b"\0" not in card.kernel_image:
                    problems.append(f"{function}: the kernel has no driver for {driver.compatible}")
            elif driver.compatible:
                pattern = re.compile(rf"^of:N\*T\*C{re.escape(driver.compatible)}(C\*)?$")
                if not any(m == name and pattern.match(p) for p, m in card.aliases):
                    problems.append(f"{function}: {driver.module} does not drive {driver.compatible}")
            if function == "SD card" and where == "module":
                needed = [name] + card.dep[name]
                missing = [m for m in needed if m not in card.initrd_modules and m not in card.builtin]
                if missing:
                    problems.append(f"SD card: not in the initrd: {', '.join(missing)}")
                where = "module, in the initrd"
            matched = driver.compatible or driver.modalias
            found.append(f"{function}: {driver.module} ({where}{', for ' + matched if matched else ''})")

    for name in board.wifi_firmware:
        if not card.file(f"/usr/lib/firmware/brcm/{name}"):
            problems.append(f"Wi-Fi: no firmware file brcm/{name}")
    found.append(f"Wi-Fi firmware: {', '.join(board.wifi_firmware)}")
    print(f"\n{board.name} ({board.tree}, kernel {card.kernel_version}):\n  " + "\n  ".join(found))
    assert not problems, f"{board.name}:\n" + "\n".join(problems)


def test_the_zero_2_w_cyw43436_firmware_is_missing_and_said_so(card):
    """Debian ships nothing for the CYW43436 of newer Zero 2 W boards; the
    first boot tells the owner to use a cable, and the README says so. When
    Debian does ship it, this fails: drop the message."""
    brcm = card.root / "usr/lib/firmware/brcm"
    assert not list(brcm.glob("brcmfmac43430b0-sdio*")) and not list(brcm.glob("*43436*"))
    check = (Path(__file__).resolve().parents[2] / "image/files/usr/lib/leitner-image/wifi-check").read_text()
    assert "needs firmware Debian does not ship: use a cable" in check
