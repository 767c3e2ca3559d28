# leitner's boot script: picks system slot A (partition 2) or B (3), counts
# its tries, and falls back to the other slot when they run out.
#
# U-Boot runs it from the boot partition (boot.scr, made by image/build with
# mkimage). The same script runs on the Pi (mmc) and under qemu's virt
# machine (virtio): U-Boot's boot flow sets devtype and devnum.
#
# The state is RAUC's U-Boot interface: BOOT_ORDER ("A B": try A first),
# BOOT_A_LEFT and BOOT_B_LEFT (tries left), and MACHINE_ID (this device's
# systemd machine id, kept across updates). It lives outside every file
# system, in two raw 4 KiB copies at 1 MiB and 1 MiB + 64 KiB of the card, in
# the redundant format of U-Boot and libubootenv (crc32, a flag byte, the
# variables): the copy with the newer flag wins, and a write goes to the other
# copy, so a power cut mid-write leaves the older copy whole. Linux reads and
# writes the same copies with fw_printenv/fw_setenv (/etc/fw_env.config).
#
# A try is counted (written) before anything of the slot is loaded, and any
# failure after that resets the board: a slot whose kernel is missing, does
# not start, panics (panic=10) or hangs (the watchdog) uses up its tries. A
# slot is confirmed by Linux (leitner-confirm-slot), which sets its tries back
# to 3 once leitner in it has answered.

echo "leitner: reading the boot state"
setenv st_size 0x1000
setenv st_data 0xffb
setexpr st_copy0 ${kernel_addr_r} + 0
setexpr st_copy1 ${kernel_addr_r} + 0x1000
setexpr st_buf ${kernel_addr_r} + 0x2000
setexpr st_out ${kernel_addr_r} + 0x3000
${devtype} dev ${devnum}
${devtype} read ${st_copy0} 0x800 8
${devtype} read ${st_copy1} 0x880 8

# U-Boot's own import wants crc32 then the variables: drop the flag byte.
# Only our variables are taken from the card.
setenv st_import 'cp.b ${st_src} ${st_buf} 4; setexpr st_from ${st_src} + 5; setexpr st_to ${st_buf} + 4; cp.b ${st_from} ${st_to} ${st_data}; env import -c ${st_buf} 0xfff BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT MACHINE_ID'
setenv st_ok0 0
setenv st_ok1 0
setenv st_src ${st_copy0}
if run st_import; then setenv st_ok0 1; fi
setenv st_src ${st_copy1}
if run st_import; then setenv st_ok1 1; fi
setexpr st_at ${st_copy0} + 4
setexpr.b st_flag0 *${st_at}
setexpr st_at ${st_copy1} + 4
setexpr.b st_flag1 *${st_at}

# Which copy is current: the valid one, or of two valid ones the newer
# (its flag one past the other's, counting round from 0xff to 0).
echo "leitner: state copies valid ${st_ok0} ${st_ok1}, flags ${st_flag0} ${st_flag1}"
setenv st_cur none
if test ${st_ok0} = 1; then setenv st_cur 0; fi
if test ${st_ok1} = 1; then
    if test ${st_cur} = none; then
        setenv st_cur 1
    else
        # Both writers (this script and libubootenv) write the next flag
        # to the other copy, so two valid copies differ by one.
        setexpr st_ahead ${st_flag1} - ${st_flag0}
        setexpr st_ahead ${st_ahead} % 0x100
        if test "${st_ahead}" = 1; then setenv st_cur 1; fi
    fi
fi
if test ${st_cur} = 0; then
    setenv st_src ${st_copy0}
    run st_import
    setenv st_flag ${st_flag0}
    setenv st_blk 0x880
elif test ${st_cur} = 1; then
    setenv st_src ${st_copy1}
    run st_import
    setenv st_flag ${st_flag1}
    setenv st_blk 0x800
else
    echo "leitner: no valid boot state; starting over with slot A"
    setenv BOOT_ORDER "A B"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 0
    setenv st_flag 0
    setenv st_blk 0x800
fi
if test -z "${BOOT_ORDER}"; then setenv BOOT_ORDER "A B"; fi
if test -z "${BOOT_A_LEFT}"; then setenv BOOT_A_LEFT 3; fi
if test -z "${BOOT_B_LEFT}"; then setenv BOOT_B_LEFT 0; fi

# Written to the copy that is not current, with the next flag.
setenv st_save 'setexpr st_flag ${st_flag} + 1; setexpr st_flag ${st_flag} % 0x100; if env exists MACHINE_ID; then env export -c -s 0xfff ${st_buf} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT MACHINE_ID; else env export -c -s 0xfff ${st_buf} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; fi; cp.b ${st_buf} ${st_out} 4; setexpr st_at ${st_out} + 4; mw.b ${st_at} ${st_flag}; setexpr st_from ${st_buf} + 4; setexpr st_to ${st_out} + 5; cp.b ${st_from} ${st_to} ${st_data}; ${devtype} write ${st_out} ${st_blk} 8'

setenv slot
for s in ${BOOT_ORDER}; do
    if test -z "${slot}" && test "${s}" = A && test ${BOOT_A_LEFT} -gt 0; then
        setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
        setenv slot A
        setenv slot_part 2
    fi
    if test -z "${slot}" && test "${s}" = B && test ${BOOT_B_LEFT} -gt 0; then
        setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
        setenv slot B
        setenv slot_part 3
    fi
done
if test -z "${slot}"; then
    # Better to try again than to stop at a prompt nobody sees: a slot
    # may have failed for a passing reason (a card seated badly, power).
    echo "leitner: no slot has tries left (order ${BOOT_ORDER}); giving both 3 more"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
    run st_save
    reset
fi
echo "leitner: booting slot ${slot} (tries left: A ${BOOT_A_LEFT}, B ${BOOT_B_LEFT}; order ${BOOT_ORDER})"
setenv st_saved 0
if run st_save; then setenv st_saved 1; fi
if test ${st_saved} = 0; then
    echo "leitner: could not write the boot state; not booting uncounted"
    reset
fi

# Debian's arm64 kernel is large (about 50 MB with its memory): U-Boot's
# default addresses put the initrd inside it. On the Pi, the kernel at
# 4 MiB; the initrd 124 MiB above the kernel (at 128 MiB on the Pi), below
# the device tree the firmware placed near the top of its memory.
#
# The serial console: the mini UART (ttyS1) on the Pi 3 and 4; the Pi 5's
# debug connector is the UART its tree calls serial10 (ttyAMA10). The screen
# (tty0) comes last: /dev/console, where the first start's messages go, is
# the last one named.
if test "${board}" = rpi; then
    setenv kernel_addr_r 0x00400000
    setenv console_args "console=ttyS1,115200 console=tty0"
    fdt addr ${fdt_addr}
    if fdt get value st_uart /aliases serial10; then
        setenv console_args "console=ttyAMA10,115200 console=tty0"
    fi
else
    setenv console_args "console=ttyAMA0"
fi
setexpr ramdisk_addr_r ${kernel_addr_r} + 0x07c00000
setenv machine_id_args
if env exists MACHINE_ID; then setenv machine_id_args "systemd.machine_id=${MACHINE_ID}"; fi
setenv bootargs "root=PARTUUID=4c65697a-0${slot_part} ro rootwait fsck.repair=yes net.ifnames=0 panic=10 rauc.slot=${slot} ${console_args} ${machine_id_args}"

setenv st_loaded 0
if load ${devtype} ${devnum}:${slot_part} ${kernel_addr_r} /boot/vmlinuz; then
    if load ${devtype} ${devnum}:${slot_part} ${ramdisk_addr_r} /boot/initrd.img; then
        setenv st_loaded 1
    fi
fi
if test ${st_loaded} = 0; then
    echo "leitner: slot ${slot} has no kernel or initrd; restarting"
    reset
fi
# The device tree the firmware (or qemu) passed: it carries the board's
# memory size and MAC address fixups.
booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}
echo "leitner: slot ${slot} did not start; restarting"
reset
