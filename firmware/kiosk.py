# The tap, on the device (DESIGN.md 4):
#   poll reader -> card -> UID (+ credential) -> suppress same card within N s -> decide
#   -> journal -> feedback -> publish -> await verdict (timeout) -> final feedback.
# Tasks beside each other on asyncio: the tap loop, the MQTT session, the uploader (journal
# -> swipes topic, oldest first) and the heartbeat. Nothing on the tap path waits on the
# network except the bounded verdict wait, and MQTT keeps running during it.
from firmware import clock, feedback as fb, net, VERSION
from protocol import messages, reasons, signing, topics, uid as uidtext, utctime

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

try:
    import gc
except ImportError:
    gc = None


def _mem_free():
    try:
        return gc.mem_free()
    except AttributeError:
        return None


class Kiosk:
    """cfg: the loaded config (firmware/config.py). board: firmware.board.Board or SimBoard.
    reader: poll() -> card (.uid bytes, .sak) or None, raises OSError on a reader fault;
    optional read_credential(card) -> True/False where the service requires MIFARE.
    journal: firmware.journal.Journal. mqtt: firmware.mqtt.MQTTClient (not yet running)."""

    def __init__(self, cfg, board, reader, journal, mqtt, store=None, log=None):
        self.cfg = cfg
        self.id = cfg["kiosk"]
        self.key = cfg["key_bytes"]
        self.board = board
        self.reader = reader
        self.journal = journal
        self.mqtt = mqtt
        self.store = store            # firmware.config.Store: persists the retained config
        self.log = log or print
        self.feedback = fb.Feedback(board)
        self.t_swipes = topics.swipes(self.id)
        self.t_results = topics.results(self.id)
        self.t_state = topics.state(self.id)
        self.t_config = topics.config(self.id)
        self.remote = None            # last config from the config topic (validated dict)
        self._deny = ()
        self._allow = ()
        self._apply_remote(store.load_remote() if store else None)
        self._last_uid = None
        self._last_tick = 0
        self._want = 0                # seq whose verdict the tap loop is waiting for
        self._verdict = None
        self._got = asyncio.Event()
        self._sent = {}               # seq -> (ticks sent, pid) for journalled swipes
        self._offline_day = None
        self._offline_count = {}      # uid -> offline acceptances today
        self._count_offline_from_journal()
        self.taps = 0
        self.verdicts = 0
        self.bad_results = 0
        self._stopped = False
        self._tasks = []
        self._fault = False
        mqtt.subs = [(self.t_results, 1), (self.t_config, 1)]
        mqtt.will = (self.t_state, self._state_payload("offline"), True)
        mqtt.on_message = self._on_message
        mqtt.on_connect = self._on_connect

    # -- settings (config.json, overridden by the retained config topic) ------------------
    def _setting(self, name, default):
        r = self.remote
        if r is not None and name in r:
            return r[name]
        return self.cfg.get(name, default)

    def _card_secret(self):
        """The site's card secret (config.json "card_secret", hex), for MIFARE credentials."""
        text = self.cfg.get("card_secret")
        if not text:
            raise OSError("no card_secret in config.json: the installer writes it")
        from protocol import credential
        return credential.secret_from_hex(text)

    def _offline_limit(self, name, default):
        r = self.remote
        if r is not None and name in r["offline"]:
            return r["offline"][name]
        return self.cfg.get("offline", {}).get(name, default)

    def service(self):
        return self._setting("service", "meal")

    def _apply_remote(self, msg):
        if msg is None:
            return
        self.remote = msg
        self._deny = set(msg["deny"])
        self._allow = set(msg["allow"])
        if clock.source not in ("ntp", "host"):
            clock.set_now(utctime.parse(msg["clock"]), "config")  # fallback time source

    # -- the tap loop ---------------------------------------------------------------------
    async def run_taps(self):
        poll_ms = self.cfg.get("poll_ms", 20)
        while not self._stopped:
            self.board.feed_watchdog()
            try:
                card = self.reader.poll()
                self._fault = False
            except OSError as e:
                if not self._fault:  # show a fault once per episode, not every poll
                    self.log("reader fault: %r" % (e,))
                    self.feedback.show("fault", reasons.READER_FAULT)
                self._fault = True
                card = None
                await clock.sleep_ms(1000)
            if card is None:
                await clock.sleep_ms(poll_ms)
                continue
            try:
                await self.tap(card)
            except Exception as e:  # noqa: BLE001 - one bad tap must not stop the kiosk
                self.log("tap failed: %r" % (e,))
                self.feedback.show("fault", reasons.READER_FAULT)

    async def tap(self, card):
        """One card presentation, start to final feedback. Returns the feedback event, or
        None when suppressed (same card again within suppress_s)."""
        try:
            text = uidtext.uid_hex(card.uid)
        except ValueError:
            return self.feedback.show("fault", reasons.READER_FAULT)
        return await self._tap(text, card)

    async def _tap(self, text, card):
        show = self.feedback.show
        now = clock.ticks_ms()
        if text == self._last_uid and \
                clock.ticks_diff(now, self._last_tick) < self._setting("suppress_s", 3) * 1000:
            self._last_tick = now
            return None
        self._last_uid = text
        self._last_tick = now
        self.taps += 1
        auth = "uid"
        if self._setting("mifare", False):
            ok = False
            try:
                ok = self.reader.read_credential(card, self._card_secret())
            except (OSError, AttributeError):
                ok = False
            if not ok:
                return show("declined", reasons.CARD_AUTH_FAILED, uid=text)
            auth = "mifare"
        if self.journal.full():
            return show("declined", reasons.JOURNAL_FULL, uid=text)
        online = self.mqtt.connected
        if not online:
            why = self._decide_offline(text)
            if why != reasons.OFFLINE_ACCEPTED:
                return show("declined", why, uid=text)
        seq = self.journal.next_seq()
        msg = messages.swipe(self.id, seq, utctime.iso(clock.now()), text, auth,
                             self.service(), not online, self.key)
        payload = messages.encode("swipe", msg)
        msg = None
        try:
            self.journal.append(seq, payload)  # on flash before it goes anywhere
        except OSError as e:
            self.log("journal write failed: %r" % (e,))
            return show("fault", reasons.READER_FAULT, "Reader error", uid=text, seq=seq)
        except Exception:  # JournalFull: the unsettled swipes plus this one do not fit
            return show("declined", reasons.JOURNAL_FULL, uid=text)
        payload = None
        if not online:
            self._count_offline(text)
            return show("offline", reasons.OFFLINE_ACCEPTED, uid=text, seq=seq)
        show("reading", uid=text, seq=seq)
        self._want = seq
        self._verdict = None
        self._got.clear()
        await self.pump()
        try:
            await clock.wait_for_ms(self._got.wait(), self.cfg.get("verdict_timeout_ms", 2500))
        except clock.TimeoutError:
            pass
        self._want = 0
        v = self._verdict
        self._verdict = None
        if v is None:
            # The swipe stays journalled and is uploaded again; the bridge settles it once.
            return show("no_verdict", reasons.NO_VERDICT, uid=text, seq=seq)
        kind = "approved" if v["verdict"] == "approved" else "declined"
        pays = v["resident_pays"] if kind == "approved" else None
        return show(kind, v["reason"], v["text"] or None, pays, v["balance"], text, seq)

    # -- offline decisions (DESIGN.md 4): cached lists and limits --------------------------
    def _decide_offline(self, text):
        if text in self._deny:
            return reasons.CARD_BLOCKED
        if self._allow and text not in self._allow:
            return reasons.UNKNOWN_CARD
        self._roll_day()
        per_card = self._offline_limit("max_per_card_per_day", 1)
        if self._offline_count.get(text, 0) >= per_card:
            return reasons.OFFLINE_LIMIT
        total = 0
        for n in self._offline_count.values():
            total += n
        if total >= self._offline_limit("max_taps", 200):
            return reasons.OFFLINE_LIMIT
        return reasons.OFFLINE_ACCEPTED

    def _roll_day(self):
        today = utctime.day(clock.now())
        if today != self._offline_day:
            self._offline_day = today
            self._offline_count = {}

    def _count_offline(self, text):
        self._roll_day()
        self._offline_count[text] = self._offline_count.get(text, 0) + 1

    def _count_offline_from_journal(self):
        # After a reboot, unsettled offline swipes of today still count against the limits.
        self._roll_day()
        for seq in self.journal.pending():
            try:
                m = messages.decode("swipe", self.journal.read(seq))
            except Exception:  # noqa: BLE001 - a journalled swipe we cannot read is not counted
                continue
            if m["offline"] and m["ts"][:10] == self._offline_day:
                self._offline_count[m["uid"]] = self._offline_count.get(m["uid"], 0) + 1

    # -- upload: the journal, oldest first ------------------------------------------------
    async def pump(self):
        """Publish unsettled swipes in seq order: never sent since boot, or sent, PUBACKed
        and still without a verdict after resend_ms (a broker may lose queued messages)."""
        if not self.mqtt.connected:
            return
        resend = self.cfg.get("resend_ms", 30000)
        now = clock.ticks_ms()
        for seq in self.journal.pending():
            sent = self._sent.get(seq)
            if sent is not None and (self.mqtt.is_inflight(sent[1]) or
                                     clock.ticks_diff(now, sent[0]) < resend):
                continue
            if not self.mqtt.can_publish() or not self.mqtt.connected:
                break
            payload = self.journal.read(seq)
            if payload is None:
                continue
            pid = await self.mqtt.publish(self.t_swipes, payload)
            self._sent[seq] = (now, pid)

    async def run_uploader(self):
        while not self._stopped:
            await self.pump()
            await clock.sleep_ms(self.cfg.get("upload_ms", 200))

    # -- incoming -------------------------------------------------------------------------
    def _on_connect(self, session_present):
        self.log("mqtt: connected (session %s)" % ("kept" if session_present else "new"))
        asyncio.create_task(self.heartbeat())

    def _on_message(self, topic, payload):
        if topic == self.t_results:
            self._on_result(payload)
        elif topic == self.t_config:
            self._on_config(payload)

    def _on_result(self, payload):
        try:
            msg = messages.decode("result", payload)
        except messages.ProtocolError as e:
            self.bad_results += 1
            self.log("result refused: %s" % (e.code,))
            return
        if msg["kiosk"] != self.id or not signing.verify("result", msg, self.key):
            self.bad_results += 1
            self.log("result refused: %s" % (reasons.BAD_MAC,))
            return
        seq = msg["seq"]
        self.verdicts += 1
        self._sent.pop(seq, None)
        self.journal.retire(seq)
        if seq == self._want:
            self._verdict = msg
            self._got.set()

    def _on_config(self, payload):
        try:
            msg = messages.decode("config", payload)
        except messages.ProtocolError as e:
            self.log("config refused: %s" % (e.code,))
            return
        if msg["kiosk"] != self.id:
            self.log("config refused: %s" % (reasons.TOPIC_MISMATCH,))
            return
        if self.store is not None:
            self.store.save_remote(payload)  # writes only when it changed (flash wear)
        self._apply_remote(msg)

    # -- state heartbeat ------------------------------------------------------------------
    def _state_payload(self, status):
        msg = {"kiosk": self.id, "status": status}
        if status == "online":
            msg["fw"] = VERSION
            msg["journal"] = self.journal.depth()
            msg["uptime"] = clock.uptime_s()
            msg["mem_free"] = _mem_free()
            msg["rssi"] = net.rssi()
            msg["ts"] = utctime.iso(clock.now())
        return messages.encode("state", msg)

    async def heartbeat(self):
        if self.mqtt.connected:
            try:
                await self.mqtt.publish(self.t_state, self._state_payload("online"), True)
            except Exception as e:  # noqa: BLE001 - window full: the next beat tries again
                self.log("heartbeat: %r" % (e,))

    async def run_heartbeat(self):
        while not self._stopped:
            await clock.sleep_ms(self.cfg.get("heartbeat_s", 60) * 1000)
            await self.heartbeat()

    # -- all together ---------------------------------------------------------------------
    def start(self):
        """Create the kiosk's tasks on the running loop; returns them."""
        self._tasks = [asyncio.create_task(self.mqtt.run()),
                       asyncio.create_task(self.run_taps()),
                       asyncio.create_task(self.run_uploader()),
                       asyncio.create_task(self.run_heartbeat())]
        return self._tasks

    def stop(self):
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self.mqtt.stop()
        self.feedback.stop()
        self.journal.close()
