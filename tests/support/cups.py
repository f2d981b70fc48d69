"""A real CUPS for the tests: Debian's ``cupsd`` on a free loopback port, one
``printer-driver-cups-pdf`` queue ``pdf`` writing its PDFs into a test directory.

cupsd runs from a private configuration (spool, logs, state in a temporary
directory).  CUPS-PDF reads its settings from ``/etc/cups`` only, so the
queue uses an instance of its own (``cups-pdf:/<name>`` reads
``/etc/cups/cups-pdf-<name>.conf``), removed again at cleanup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from twisted.internet.defer import inlineCallbacks

from qvd.pgcluster import port_in_use
from qvd.stream.sockets import free_port
from tests.support import waiting
from tests.support.processes import Child

PPD = "/usr/share/ppd/cups-pdf/CUPS-PDF_opt.ppd"
CUPSD_CONF = """\
Listen 127.0.0.1:{port}
LogLevel info
WebInterface No
Browsing Off
DefaultAuthType None
<Location />
  Order allow,deny
  Allow all
</Location>
<Policy default>
  <Limit All>
    Order deny,allow
  </Limit>
</Policy>
"""
FILES_CONF = """\
ServerRoot {root}
RequestRoot {root}/spool
CacheDir {root}/cache
StateDir {root}/state
TempDir {root}/tmp
ErrorLog {root}/log/error_log
AccessLog {root}/log/access_log
PageLog {root}/log/page_log
ServerBin /usr/lib/cups
DataDir /usr/share/cups
FileDevice No
"""


class PDFPrinter:
    """``server`` (host:port) of the CUPS; PDFs of printed jobs appear in ``out``."""

    def __init__(self, testcase):
        self.root = tempfile.mkdtemp(prefix="qvd-test-cups-")
        testcase.addCleanup(shutil.rmtree, self.root, True)
        os.chmod(self.root, 0o755)  # cupsd's filters run as lp
        self.out = os.path.join(self.root, "out")
        for sub in ("spool", "cache", "state", "tmp", "log", "out"):
            os.makedirs(os.path.join(self.root, sub))
        os.chmod(self.out, 0o1777)  # CUPS-PDF writes as the job's user (the VM's session user)
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.instance = os.path.basename(self.root).replace("-", "")
        self.instance_conf = f"/etc/cups/cups-pdf-{self.instance}.conf"
        with open(self.instance_conf, "w") as f:
            f.write(f"Out {self.out}\nAnonDirName {self.out}\nLog {self.root}/log\n")
        testcase.addCleanup(os.unlink, self.instance_conf)
        with open(os.path.join(self.root, "cupsd.conf"), "w") as f:
            f.write(CUPSD_CONF.format(port=self.port))
        with open(os.path.join(self.root, "cups-files.conf"), "w") as f:
            f.write(FILES_CONF.format(root=self.root))
        self.testcase = testcase

    @inlineCallbacks
    def start(self):
        argv = ["/usr/sbin/cupsd", "-f", "-c", f"{self.root}/cupsd.conf",
                "-s", f"{self.root}/cups-files.conf"]
        Child(self.testcase, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
              stop_signal="TERM")
        yield waiting.poll(lambda: port_in_use(self.port), bool, 20, "cupsd listening")
        subprocess.run(["lpadmin", "-h", self.server, "-p", "pdf", "-E",
                        "-v", f"cups-pdf:/{self.instance}", "-P", PPD],
                       check=True, capture_output=True)

    def pdfs(self) -> list[str]:
        return sorted(os.path.join(self.out, name) for name in os.listdir(self.out)
                      if name.endswith(".pdf"))

    def text(self) -> str:
        """The text of the PDFs printed so far (a PDF being written reads as none)."""
        return "".join(subprocess.run(["pdftotext", pdf, "-"], capture_output=True,
                                      text=True).stdout for pdf in self.pdfs())
