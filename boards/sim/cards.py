# Virtual ISO/IEC 14443 type A cards for the sim board's MFRC522 emulator (boards/sim/rc522.py).
#
# A card sees the frames that reach it over the air (bytes + number of valid bits, CRC_A
# bytes included exactly as transmitted) and answers with a frame or with silence (None).
# The ISO 14443-3 state machine (IDLE, READY, ACTIVE, HALT; REQA 0x26 / WUPA 0x52 short
# frames, ANTICOLLISION / SELECT per cascade level with the cascade tag 0x88 and BCC, HLTA
# 0x50 0x00) lives in Card; the application commands (MIFARE Classic, type 2 / Ultralight)
# live in the subclasses. Crypto1 is not implemented: authentication succeeds iff the key
# and the four UID bytes given to MFAuthent match and the access bits allow that key
# (the emulator then sets Status2Reg.MFCrypto1On, as the chip does).

IDLE = 0
READY = 1
ACTIVE = 2
HALT = 3

CT = 0x88          # ISO 14443-3 cascade tag
ACK = 0x0A         # MIFARE 4-bit ACK
NAK_INVALID = 0x00  # invalid argument / operation (type 2: invalid page)
NAK_NOT_ALLOWED = 0x04
NAK_TRANSMISSION = 0x05  # CRC or parity error seen by the card

DEFAULT_KEY = b"\xff\xff\xff\xff\xff\xff"
TRANSPORT_ACCESS = b"\xff\x07\x80\x69"  # C1C2C3: data blocks 000, trailer 001


def crc_a(data, n=None, preset=0x6363):
    """ISO/IEC 14443-3 CRC_A (x^16 + x^12 + x^5 + 1, reflected, preset 6363h, no final XOR).
    Returns the 16-bit value; on the air the low byte goes first."""
    if n is None:
        n = len(data)
    crc = preset
    for i in range(n):
        crc ^= data[i]
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x8408
            else:
                crc >>= 1
    return crc


def with_crc(data):
    c = crc_a(data)
    return bytes(data) + bytes((c & 0xFF, c >> 8))


def crc_ok(data, n):
    """True if the last two bytes of data[:n] are its CRC_A."""
    if n < 3:
        return False
    c = crc_a(data, n - 2)
    return data[n - 2] == (c & 0xFF) and data[n - 1] == (c >> 8)


def bcc(b0, b1, b2, b3):
    return b0 ^ b1 ^ b2 ^ b3


def _bit(buf, i):
    return (buf[i >> 3] >> (i & 7)) & 1


class Card:
    """ISO 14443-3 type A card: state machine and anticollision. Subclasses answer commands."""

    atqa = b"\x04\x00"
    final_sak = 0x08

    def __init__(self, uid, sak=None, atqa=None):
        uid = bytes(uid)
        if len(uid) not in (4, 7, 10):
            raise ValueError("UID must be 4, 7 or 10 bytes")
        self.uid = uid
        if sak is not None:
            self.final_sak = sak
        if atqa is not None:
            self.atqa = bytes(atqa)
        else:
            # ATQA b8b7 = UID size (00 single, 01 double, 10 triple); b3 = anticollision bit frame.
            self.atqa = bytes(((0x04, 0x44, 0x84)[(4, 7, 10).index(len(uid))] | (self.atqa[0] & 0x1B), self.atqa[1]))
        # CLn fields: 4 UID-CLn bytes + BCC, CT prefixed on the levels that are not the last.
        levels = {4: ((0, 4),), 7: ((0, 3), (3, 4)), 10: ((0, 3), (3, 3), (6, 4))}[len(uid)]
        self.cl = []
        for i in range(len(levels)):
            start, count = levels[i]
            part = uid[start:start + count]
            if count == 3:
                part = bytes((CT,)) + part
            self.cl.append(part + bytes((bcc(part[0], part[1], part[2], part[3]),)))
        self.power_off()

    # -- field events --
    def power_off(self):
        self.state = IDLE
        self.from_halt = False
        self.level = 0
        self.reset_session()

    def reset_session(self):
        pass

    def in_session(self):
        """True while a Crypto1 session is open (only the reader's encrypted frames make sense)."""
        return False

    def auth_uid(self):
        """The four UID bytes a reader feeds to Crypto1 (NXP AN10927: the last four for 7-byte UIDs)."""
        return self.uid[-4:] if len(self.uid) == 7 else self.uid[:4]

    def _error(self):
        # ISO 14443-3: an unexpected or corrupted frame returns the card to IDLE (HALT if it was
        # woken from HALT).
        self.state = HALT if self.from_halt else IDLE
        self.level = 0
        self.reset_session()

    def garbage(self):
        """A frame the card cannot decode (wrong Crypto1 state, RF noise)."""
        if self.state in (READY, ACTIVE):
            self._error()

    # -- frames --
    def receive(self, frame, nbits):
        """frame: bytes as sent (CRC included); nbits: valid bits in total. Returns
        (bytes, nbits) or None for silence."""
        if nbits == 7:
            cmd = frame[0] & 0x7F
            if cmd == 0x26 and self.state == IDLE or cmd == 0x52 and self.state in (IDLE, HALT):
                self.from_halt = self.state == HALT
                self.state = READY
                self.level = 0
                return self.atqa, 16
            if self.state in (READY, ACTIVE):
                self._error()
            return None
        if self.state == READY:
            return self._anticollision(frame, nbits)
        if self.state == ACTIVE:
            nbytes = nbits >> 3
            if nbits & 7:
                self._error()
                return None
            if nbytes == 4 and frame[0] == 0x50 and frame[1] == 0x00 and crc_ok(frame, 4):
                self.state = HALT
                self.level = 0
                self.reset_session()
                return None
            return self.command(frame, nbytes)
        return None

    def _anticollision(self, frame, nbits):
        sel = (0x93, 0x95, 0x97)
        if nbits < 16 or frame[0] not in sel:
            self._error()
            return None
        if sel.index(frame[0]) != self.level:
            self._error()
            return None
        cl = self.cl[self.level]
        nvb = frame[1]
        if nvb == 0x70:
            if nbits != 72 or not crc_ok(frame, 9):
                self._error()
                return None
            if frame[2:7] != cl:
                self._error()   # SELECT for another card
                return None
            if self.level + 1 < len(self.cl):
                self.level += 1
                sak = 0x04   # cascade bit: UID not complete
            else:
                self.state = ACTIVE
                sak = self.final_sak
            return with_crc(bytes((sak,))), 24
        known = ((nvb >> 4) - 2) * 8 + (nvb & 0x0F)
        if known < 0 or known > 39 or nbits != 16 + known:
            self._error()
            return None
        for i in range(known):
            if _bit(frame, 16 + i) != _bit(cl, i):
                return None   # not our prefix: stay READY, silent
        # Answer with the remaining bits of UID CLn + BCC, starting at bit `known`.
        out = bytearray(5)
        n = 40 - known
        for i in range(n):
            if _bit(cl, known + i):
                out[i >> 3] |= 1 << (i & 7)
        return bytes(out[:(n + 7) >> 3]), n

    def command(self, frame, nbytes):
        self._error()
        return None


def access_bits(c_data0, c_data1, c_data2, c_trailer):
    """Encode the access bytes 6..8 of a sector trailer from four 3-bit (C1C2C3) conditions."""
    c = (c_data0, c_data1, c_data2, c_trailer)
    c1 = c2 = c3 = 0
    for b in range(4):
        c1 |= ((c[b] >> 2) & 1) << b
        c2 |= ((c[b] >> 1) & 1) << b
        c3 |= (c[b] & 1) << b
    return bytes(((~c2 & 0xF) << 4 | (~c1 & 0xF), c1 << 4 | (~c3 & 0xF), c3 << 4 | c2))


def decode_access(b6, b7, b8):
    """Access bytes -> list of four C1C2C3 values, or None if the inverted copies disagree."""
    c1 = b7 >> 4
    c2 = b8 & 0xF
    c3 = b8 >> 4
    if (b6 & 0xF) != (~c1 & 0xF) or (b6 >> 4) != (~c2 & 0xF) or (b7 & 0xF) != (~c3 & 0xF):
        return None
    return [((c1 >> b) & 1) << 2 | ((c2 >> b) & 1) << 1 | ((c3 >> b) & 1) for b in range(4)]


# MIFARE Classic data block access (C1C2C3 -> who may read, write, increment, decrement/
# transfer/restore): "A" key A, "B" key B, "AB" either, "" never.
DATA_ACCESS = {
    0b000: ("AB", "AB", "AB", "AB"),
    0b010: ("AB", "", "", ""),
    0b100: ("AB", "B", "", ""),
    0b110: ("AB", "B", "B", "AB"),
    0b001: ("AB", "", "", "AB"),
    0b011: ("B", "B", "", ""),
    0b101: ("B", "", "", ""),
    0b111: ("", "", "", ""),
}
# Sector trailer access: (key A write, access bits read, access bits write, key B read, key B write)
TRAILER_ACCESS = {
    0b000: ("A", "A", "", "A", "A"),
    0b010: ("", "A", "", "A", ""),
    0b100: ("B", "AB", "", "", "B"),
    0b110: ("", "AB", "", "", ""),
    0b001: ("A", "A", "A", "A", "A"),
    0b011: ("B", "AB", "B", "", "B"),
    0b101: ("", "AB", "B", "", ""),
    0b111: ("", "AB", "", "", ""),
}


def value_block(value, addr):
    """MIFARE value block layout: value, ~value, value (LE 32-bit), addr, ~addr, addr, ~addr."""
    v = value & 0xFFFFFFFF
    b = bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, v >> 24))
    nb = bytes(x ^ 0xFF for x in b)
    return b + nb + b + bytes((addr, addr ^ 0xFF, addr, addr ^ 0xFF))


def parse_value_block(data):
    """Returns the signed value, or None if the redundant copies disagree."""
    for i in range(4):
        if data[i] != data[8 + i] or data[i] != data[4 + i] ^ 0xFF:
            return None
    v = data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24
    return v - (1 << 32) if v & 0x80000000 else v


class MifareClassic1K(Card):
    """MIFARE Classic 1K: 16 sectors of 4 blocks, block 3 of each a sector trailer
    (key A, access bytes 6..9, key B). Block 0 holds the UID (manufacturer block)."""

    final_sak = 0x08

    def __init__(self, uid, key_a=DEFAULT_KEY, key_b=DEFAULT_KEY, access=TRANSPORT_ACCESS):
        Card.__init__(self, uid)
        self.blocks = [bytearray(16) for _ in range(64)]
        u = self.uid
        if len(u) == 4:
            self.blocks[0][:5] = u + bytes((bcc(u[0], u[1], u[2], u[3]),))
        else:
            self.blocks[0][:len(u)] = u
        self.blocks[0][5:8] = b"\x08\x04\x00"
        for s in range(16):
            self.set_trailer(s, key_a, key_b, access)
        self.write_time_ns = 2_000_000   # model: EEPROM programming before the second ACK

    def set_trailer(self, sector, key_a, key_b, access):
        t = self.blocks[sector * 4 + 3]
        t[0:6] = key_a
        t[6:10] = access
        t[10:16] = key_b

    def reset_session(self):
        self.auth_sector = None
        self.auth_key = None
        self.pending = None    # (op, block) waiting for the second part of a two-part command
        self.transfer = None   # internal transfer buffer (value operations)

    def in_session(self):
        return self.auth_sector is not None

    def _conditions(self, sector):
        t = self.blocks[sector * 4 + 3]
        return decode_access(t[6], t[7], t[8])

    def authenticate(self, cmd, block, key, uid4):
        """MFAuthent from the reader: True iff key and UID bytes are right and allowed."""
        if self.state != ACTIVE or block >= 64 or cmd not in (0x60, 0x61):
            self._error()
            return False
        sector = block // 4
        t = self.blocks[sector * 4 + 3]
        kt = "A" if cmd == 0x60 else "B"
        good = bytes(key) == bytes(t[0:6] if kt == "A" else t[10:16]) and bytes(uid4) == self.auth_uid()
        cond = self._conditions(sector)
        if good and kt == "B" and cond is not None and TRAILER_ACCESS[cond[3]][3]:
            good = False   # key B readable: it serves as data, not as a key
        if cond is None:
            good = False   # corrupted access bits block the sector
        if not good:
            self._error()
            return False
        self.auth_sector = sector
        self.auth_key = kt
        return True

    def _nak(self, code):
        self._error()
        return bytes((code,)), 4

    def _allowed(self, who):
        return self.auth_key in who

    def command(self, frame, nbytes):
        if not self.in_session():
            # Without authentication every memory command is refused.
            if nbytes >= 2:
                return self._nak(NAK_NOT_ALLOWED)
            self._error()
            return None
        if not crc_ok(frame, nbytes):
            return self._nak(NAK_TRANSMISSION)
        if self.pending is not None:
            op, block = self.pending
            self.pending = None
            if op == "write" and nbytes == 18:
                self._write(block, frame[0:16])
                return bytes((ACK,)), 4
            if op in ("inc", "dec", "restore") and nbytes == 6:
                v = parse_value_block(self.blocks[block])
                d = frame[0] | frame[1] << 8 | frame[2] << 16 | frame[3] << 24
                if op == "inc":
                    v += d
                elif op == "dec":
                    v -= d
                self.transfer = v
                return None   # no ACK after the operand
            return self._nak(NAK_INVALID)
        cmd = frame[0]
        block = frame[1] if nbytes >= 2 else 0xFF
        if nbytes != 4 or block >= 64 or block // 4 != self.auth_sector:
            return self._nak(NAK_NOT_ALLOWED)
        sector = block // 4
        cond = self._conditions(sector)
        trailer = block % 4 == 3
        if cmd == 0x30:
            if trailer:
                return with_crc(self._read_trailer(sector, TRAILER_ACCESS[cond[3]])), 144
            if not self._allowed(DATA_ACCESS[cond[block % 4]][0]):
                return self._nak(NAK_NOT_ALLOWED)
            return with_crc(bytes(self.blocks[block])), 144
        if cmd == 0xA0:
            if trailer:
                rule = TRAILER_ACCESS[cond[3]]
                ok = any(self._allowed(x) for x in (rule[0], rule[2], rule[4]))
            else:
                ok = block != 0 and self._allowed(DATA_ACCESS[cond[block % 4]][1])
            if not ok:
                return self._nak(NAK_NOT_ALLOWED)
            self.pending = ("write", block)
            return bytes((ACK,)), 4
        if cmd in (0xC0, 0xC1, 0xC2) and not trailer:
            acc = DATA_ACCESS[cond[block % 4]]
            op = {0xC1: "inc", 0xC0: "dec", 0xC2: "restore"}[cmd]
            who = acc[2] if op == "inc" else acc[3]
            if not self._allowed(who) or parse_value_block(self.blocks[block]) is None:
                return self._nak(NAK_NOT_ALLOWED)
            self.pending = (op, block)
            return bytes((ACK,)), 4
        if cmd == 0xB0 and not trailer:
            if self.transfer is None or not self._allowed(DATA_ACCESS[cond[block % 4]][3]):
                return self._nak(NAK_NOT_ALLOWED)
            self.blocks[block][:] = value_block(self.transfer, block)
            self.transfer = None
            return bytes((ACK,)), 4
        return self._nak(NAK_NOT_ALLOWED)

    def _read_trailer(self, sector, acc):
        t = self.blocks[sector * 4 + 3]
        out = bytearray(16)   # key A is never readable: reads as zeros
        if self._allowed(acc[1]):
            out[6:10] = t[6:10]
        if self._allowed(acc[3]):
            out[10:16] = t[10:16]
        return bytes(out)

    def _write(self, block, data):
        if block % 4 != 3:
            self.blocks[block][:] = data
            return
        acc = TRAILER_ACCESS[self._conditions(block // 4)[3]]
        t = self.blocks[block]
        if self._allowed(acc[0]):
            t[0:6] = data[0:6]
        if self._allowed(acc[2]):
            t[6:10] = data[6:10]
        if self._allowed(acc[4]):
            t[10:16] = data[10:16]

    def process_time_ns(self, frame, nbytes):
        if self.pending is None and nbytes == 18:
            return self.write_time_ns
        return 0


class Type2Card(Card):
    """NFC Forum type 2 / MIFARE Ultralight style card: 4-byte pages, READ (0x30) returns 16
    bytes (four pages, rolling over), WRITE (0xA2) one page, COMPATIBILITY WRITE (0xA0)."""

    final_sak = 0x00

    def __init__(self, uid, pages=16):
        Card.__init__(self, uid)
        self.pages = [bytearray(4) for _ in range(pages)]
        u = self.uid
        if len(u) == 7:
            self.pages[0][:] = bytes((u[0], u[1], u[2], CT ^ u[0] ^ u[1] ^ u[2]))
            self.pages[1][:] = u[3:7]
            self.pages[2][0] = u[3] ^ u[4] ^ u[5] ^ u[6]
        self.write_time_ns = 4_100_000 // 1   # model: EEPROM write time of a page

    def reset_session(self):
        self.pending = None

    def _nak(self, code):
        self._error()
        return bytes((code,)), 4

    def command(self, frame, nbytes):
        if not crc_ok(frame, nbytes):
            return self._nak(NAK_TRANSMISSION)
        n = len(self.pages)
        if self.pending is not None:
            page = self.pending
            self.pending = None
            if nbytes != 18:
                return self._nak(NAK_INVALID)
            self.pages[page][:] = frame[0:4]
            return bytes((ACK,)), 4
        cmd = frame[0]
        if cmd == 0x30 and nbytes == 4:
            p = frame[1]
            if p >= n:
                return self._nak(NAK_INVALID)
            out = bytearray(16)
            for i in range(4):
                out[i * 4:i * 4 + 4] = self.pages[(p + i) % n]
            return with_crc(out), 144
        if cmd == 0xA2 and nbytes == 8:
            p = frame[1]
            if p < 2 or p >= n:
                return self._nak(NAK_INVALID)
            self.pages[p][:] = frame[2:6]
            return bytes((ACK,)), 4
        if cmd == 0xA0 and nbytes == 4:
            p = frame[1]
            if p < 2 or p >= n:
                return self._nak(NAK_INVALID)
            self.pending = p
            return bytes((ACK,)), 4
        return self._nak(NAK_INVALID)

    def process_time_ns(self, frame, nbytes):
        if nbytes == 8 and frame[0] == 0xA2 or nbytes == 18:
            return self.write_time_ns
        return 0


class Field:
    """The reader's RF field: the cards in it, their entry/exit, and injected RF noise."""

    def __init__(self):
        self.cards = []
        self.powered = False
        self.noise = []          # pending corruptions of card -> reader frames: "crc", "parity", "drop"
        self._leave = []         # [card, frames_left]
        self.frames = 0          # card answers delivered (for tests and the bench)

    def add(self, card):
        if card not in self.cards:
            self.cards.append(card)
            card.power_off()     # a card entering the field powers up in IDLE
        return card

    def remove(self, card):
        if card in self.cards:
            self.cards.remove(card)
            card.power_off()

    def leave_after(self, card, frames):
        """Card leaves the field after it has answered `frames` more frames."""
        self._leave.append([card, frames])

    def inject_noise(self, kind, count=1):
        """Corrupt the next `count` card answers: "crc" (a flipped data bit), "parity"
        (a parity bit wrong), or "drop" (answer lost)."""
        for _ in range(count):
            self.noise.append(kind)

    def set_power(self, on):
        # Field off: every card loses power and restarts in IDLE when it comes back.
        if not on:
            for c in self.cards:
                c.power_off()
        self.powered = on

    def _tick(self, card):
        for entry in self._leave:
            if entry[0] is card:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._leave.remove(entry)
                    self.remove(card)
                return

    def exchange(self, frame, nbits, crypto_on):
        """Deliver one reader frame; returns a list of (card, bytes, nbits, process_ns)."""
        out = []
        if not self.powered:
            return out
        for card in list(self.cards):
            if crypto_on and not card.in_session() or not crypto_on and card.in_session():
                card.garbage()   # Crypto1 on one side only: the frame decodes as noise
                continue
            proc = 0
            if hasattr(card, "process_time_ns") and nbits & 7 == 0 and card.state == ACTIVE:
                proc = card.process_time_ns(frame, nbits >> 3)
            r = card.receive(frame, nbits)
            if r is not None:
                out.append((card, r[0], r[1], proc))
                self.frames += 1
                self._tick(card)
        return out

    def authenticate(self, cmd, block, key, uid4):
        """MFAuthent: True if an ACTIVE card accepted the key (then its session is open)."""
        if not self.powered:
            return None
        for card in list(self.cards):
            if card.state == ACTIVE and hasattr(card, "authenticate"):
                ok = card.authenticate(cmd, block, key, uid4)
                self._tick(card)
                return ok
        return None


def personalised(uid, secret, card_no):
    """A MIFARE Classic 1K card as enrollment leaves it: the credential in sector 1 and the
    per-card keys in its trailer (protocol/credential.py)."""
    from protocol import credential
    card = MifareClassic1K(uid)
    card.blocks[credential.BLOCK][:] = credential.block(secret, card.uid, card_no)
    card.blocks[credential.TRAILER][:] = credential.trailer(secret, card.uid)
    return card


def uid_clone(uid):
    """What a cheap 'UID changeable' card copier makes: the same UID, none of the secrets."""
    return MifareClassic1K(uid)
