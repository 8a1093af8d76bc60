#!/bin/sh
# Record service of the colospec test guest: one instance per TCP connection (nc -ll -e),
# stdin/stdout are the socket. Record n lives in sector n of /dev/vda as the line
# "COLOREC <n> <payload>\n", zero-padded to 512 bytes. Protocol: see README.md.
disk=/dev/vda
sectors=$(blockdev --getsz "$disk")

reply() { printf '%s\n' "$*"; }

# A sector number: decimal, no leading zeros, below the disk's size.
valid_n() {
	case "$1" in
	"" | *[!0-9]* | 0?* | ??????????*) return 1 ;;
	esac
	[ "$1" -lt "$sectors" ]
}

while IFS= read -r line; do
	cmd=${line%% *}
	rest=${line#"$cmd"}
	rest=${rest# }
	case "$cmd" in
	W)
		n=${rest%% *}
		case "$rest" in
		*" "*) payload=${rest#* } ;;
		*) reply "ERR W needs: W <n> <payload>" && continue ;;
		esac
		valid_n "$n" || { reply "ERR bad record number" && continue; }
		case "$payload" in *[![:print:]]*) reply "ERR payload not printable ASCII" && continue ;; esac
		[ "${#payload}" -le 400 ] || { reply "ERR payload longer than 400 bytes" && continue; }
		# 512 bytes with O_DIRECT from dd's page-aligned buffer (busybox aligns only
		# buffers of >= 4096 bytes, hence bs=4096 with byte counts; it silently drops
		# O_DIRECT on EINVAL), then fsync: a flush of the virtual disk's write cache.
		# So the record is in QEMU's block layer before OK is sent.
		if { printf 'COLOREC %s %s\n' "$n" "$payload" && head -c 512 /dev/zero; } |
			dd of="$disk" bs=4096 count=512 iflag=fullblock,count_bytes \
				seek=$((n * 512)) oflag=seek_bytes,direct conv=notrunc,fsync status=none; then
			reply "OK $n"
		else
			reply "ERR $n write failed"
		fi
		;;
	R)
		valid_n "$rest" || { reply "ERR bad record number" && continue; }
		rec=$(dd if="$disk" bs=4096 skip=$((rest * 512)) count=512 \
			iflag=direct,skip_bytes,count_bytes status=none |
			tr -d '\000' | head -n 1)
		case "$rec" in
		"COLOREC $rest "*) reply "DATA $rest ${rec#"COLOREC $rest "}" ;;
		*) reply "NONE $rest" ;;
		esac
		;;
	C)
		# Scans the whole disk: "COUNT <records> <highest n, -1 if none>".
		dd if="$disk" bs=64k iflag=direct status=none | tr -d '\000' |
			awk '/^COLOREC [0-9]+ / { k++; if ($2 + 0 > m) m = $2 + 0 }
			     END { print "COUNT", k + 0, (k ? m : -1) }'
		;;
	*) reply "ERR unknown command (W, R or C)" ;;
	esac
done
