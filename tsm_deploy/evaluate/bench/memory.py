"""The process's resident-set high-water mark over a span of a benchmark."""

from __future__ import annotations

class _PeakRss:
    """RSS high-water mark of this process over a span: Linux VmHWM (reset via clear_refs), else psutil samples."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._kernel = self._try_reset()
        self._sampled = 0

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    def reset(self) -> None:
        self._sampled = self._process.memory_info().rss
        if self._kernel:
            self._kernel = self._try_reset()

    def sample(self) -> None:
        if not self._kernel:
            self._sampled = max(self._sampled, self._process.memory_info().rss)

    def peak_bytes(self) -> int:
        if self._kernel:
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) * 1024
            except OSError:
                pass
        return max(self._sampled, self._process.memory_info().rss)

    @property
    def method(self) -> str:
        return "VmHWM (reset via /proc/self/clear_refs)" if self._kernel else "psutil RSS sampled after each step"

    def rss_bytes(self) -> int:
        return self._process.memory_info().rss
