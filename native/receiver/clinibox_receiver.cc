// clinibox-receiver: the box's DICOM port in native code (dcmtk), one process per association.
//
// It owns the network side of the Storage SCP and nothing that decides: it negotiates
// (called and calling AE titles, the box's transfer syntaxes, optionally TLS), bounds every
// peer (associations in all and per address, PDU length, object size, timeouts), writes each
// C-STORE data set to a file in the spool's tmp folder as it arrives, then asks the box's
// Python lander over a Unix socket to land it (rename, fsyncs, queue row, duplicates,
// conflicts, quarantine) and answers the status the lander gives: Success only once the
// object and its queue row are durable. See firmware_app/ingest/native_receiver.py.
//
// Why one process per association: the listening process only accepts and counts, so a
// silent or slow peer (TLS handshake, association request) can never stall the others, and
// a data set that crashed the DICOM parser would end its own association, nothing else.
//
// Protocol with the lander, one line each way per C-STORE (fields hex-encoded: a peer's
// strings never reach the line as they were sent):
//   receiver -> lander:  <file name in receive dir> \t <hex Affected SOP Instance UID> \t
//                        <hex calling AE> \t <hex Affected SOP Class UID> \n
//   lander -> receiver:  <DICOM status, decimal> \n
// The lander checks the data set against the command's UIDs (store_checks.py) and refuses
// a mismatch or an invalid UID with the status Orthanc answers; the receiver passes it on.
//
// usage: clinibox-receiver --host H --port P --ae-title T --receive-dir DIR --landing SOCKET
//        [--allow-calling AE]... [--max-associations N] [--max-per-peer N] [--max-pdu BYTES]
//        [--max-object BYTES] [--acse-timeout S] [--dimse-timeout S]
//        [--tls-cert PEM --tls-key PEM [--tls-ca PEM]]
// It prints "READY <port>" on stdout once it listens, and ends when its parent (the box's
// service) ends.

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scp.h>
#include <dcmtk/dcmtls/tlslayer.h>
#include <dcmtk/oflog/oflog.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

const char *const RECEIVING_PREFIX = "receiving-";  // firmware_app.storage.spool
const Uint16 SUCCESS = 0x0000;
const Uint16 OUT_OF_RESOURCES = 0xA700;

struct Settings {
  std::string host = "0.0.0.0";
  int port = 11112;
  std::string ae_title = "CLINIBOX";
  std::vector<std::string> allowed_calling;
  int max_associations = 8;
  int max_per_peer = 4;
  unsigned long max_pdu = 256 * 1024;
  unsigned long long max_object = 1ULL << 30;
  int acse_timeout = 10;
  int dimse_timeout = 60;
  std::string receive_dir;
  std::string landing;
  std::string tls_cert, tls_key, tls_ca;
};

Settings g_settings;
volatile sig_atomic_t g_stop = 0;

void say(const char *level, const std::string &text) {
  fprintf(stderr, "%s %s\n", level, text.c_str());
  fflush(stderr);
}

std::string trimmed(const std::string &text) {
  size_t start = text.find_first_not_of(' ');
  if (start == std::string::npos) return "";
  return text.substr(start, text.find_last_not_of(' ') - start + 1);
}

std::string hex(const char *text) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char *c = reinterpret_cast<const unsigned char *>(text); *c; ++c) {
    out += digits[*c >> 4];
    out += digits[*c & 15];
  }
  return out;
}

// The box's transfer syntaxes (firmware_app/ingest/dicom_scp.py ACCEPTED_TRANSFER_SYNTAXES).
const char *TRANSFER_SYNTAXES[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_RLELosslessTransferSyntax,
};

// The lander's answer for one received file: a DICOM status, OUT_OF_RESOURCES when the
// lander cannot be reached or does not answer (the sender keeps the object and retries).
class Lander {
 public:
  ~Lander() {
    if (fd_ >= 0) close(fd_);
  }

  Uint16 land(const std::string &name, const char *sop_uid, const std::string &calling,
              const char *sop_class) {
    std::string request = name + "\t" + hex(sop_uid) + "\t" + hex(calling.c_str()) + "\t" +
                          hex(sop_class) + "\n";
    if (!connected() || !send_all(request)) return fail("the lander cannot be reached");
    std::string answer;
    char c;
    while (answer.size() < 16) {
      ssize_t n = read(fd_, &c, 1);
      if (n <= 0) return fail("the lander closed without an answer");
      if (c == '\n') return static_cast<Uint16>(strtoul(answer.c_str(), nullptr, 10));
      answer += c;
    }
    return fail("the lander's answer is not a status");
  }

 private:
  int fd_ = -1;

  bool connected() {
    if (fd_ >= 0) return true;
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (g_settings.landing.size() >= sizeof address.sun_path) return false;
    strcpy(address.sun_path, g_settings.landing.c_str());
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    if (connect(fd_, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
      close(fd_);
      fd_ = -1;
      return false;
    }
    // a lander that does not answer within the DIMSE timeout is out of resources: the
    // sender is told so (and retries) before its own timeout gives up on us
    timeval limit{g_settings.dimse_timeout, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    return true;
  }

  bool send_all(const std::string &data) {
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  Uint16 fail(const char *why) {
    say("ERROR", std::string("C-STORE refused, out of resources: ") + why);
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    return OUT_OF_RESOURCES;
  }
};

// A peer must have sent its association request within the ACSE timeout of connecting.
// dcmtk bounds the wait for the request itself, but not a TLS handshake that never comes
// (its read waits for the socket's receive timeout, a minute), so the association process
// sets an alarm when it starts and clears it once the request has arrived. The handler
// only writes a line prepared beforehand and ends the process (async-signal-safe).
char g_overdue_line[160];

void association_overdue(int) {
  ssize_t written = write(STDERR_FILENO, g_overdue_line, strlen(g_overdue_line));
  (void)written;
  _exit(4);
}

void expect_request_within_acse_timeout(const std::string &peer) {
  snprintf(g_overdue_line, sizeof g_overdue_line,
           "WARNING connection from %s closed: no association request within %d s\n",
           peer.c_str(), g_settings.acse_timeout);
  signal(SIGALRM, association_overdue);
  alarm(static_cast<unsigned>(g_settings.acse_timeout));
}

// One association, in its own process: dcmtk's SCP with the box's checks.
class AssociationSCP : public DcmSCP {
 public:
  explicit AssociationSCP(const std::string &peer) : peer_(peer) {}

 protected:
  OFBool checkCalledAETitleAccepted(const OFString &called) override {
    return trimmed(called.c_str()) == g_settings.ae_title;
  }

  OFBool checkCallingAETitleAccepted(const OFString &calling) override {
    calling_ = trimmed(calling.c_str());
    if (g_settings.allowed_calling.empty()) return OFTrue;
    for (const std::string &allowed : g_settings.allowed_calling)
      if (allowed == calling_) return OFTrue;
    say("WARNING", "association from " + peer_ + " refused: calling AE title not allowed");
    return OFFalse;
  }

  void notifyRECEIVEProgress(const unsigned long bytes) override {
    if (bytes <= g_settings.max_object) return;
    // Past the object limit while arriving: drop the connection at once (ends this
    // process); the half-written file goes with it.
    unlink(receiving_.c_str());
    say("WARNING", "association from " + peer_ + " dropped: object passed " +
                       std::to_string(g_settings.max_object >> 20) +
                       " MB while arriving; over the object limit");
    _exit(3);
  }

  OFCondition handleIncomingCommand(T_DIMSE_Message *message,
                                    const DcmPresentationContextInfo &context) override {
    if (message->CommandField != DIMSE_C_STORE_RQ)
      return DcmSCP::handleIncomingCommand(message, context);
    T_DIMSE_C_StoreRQ &request = message->msg.CStoreRQ;
    std::string name = std::string(RECEIVING_PREFIX) + std::to_string(getpid()) + "-" +
                       std::to_string(count_++) + ".dcm";
    receiving_ = g_settings.receive_dir + "/" + name;
    OFCondition received = receiveSTORERequest(request, context.presentationContextID,
                                               receiving_.c_str());
    if (received.bad()) {
      unlink(receiving_.c_str());
      return received;
    }
    Uint16 status = lander_.land(name, request.AffectedSOPInstanceUID, calling_,
                                 request.AffectedSOPClassUID);
    if (status != SUCCESS) unlink(receiving_.c_str());  // landed files were renamed away
    return sendSTOREResponse(context.presentationContextID, request, status);
  }

  void notifyAssociationRequest(const T_ASC_Parameters &params,
                                DcmSCPActionType &action) override {
    alarm(0);  // the request arrived in time (expect_request_within_acse_timeout)
    requested_ = const_cast<T_ASC_Parameters *>(&params);  // negotiated below, before the answer
    DcmSCP::notifyAssociationRequest(params, action);
  }

  // Verification, and every storage SOP class with the box's transfer syntaxes, so that a
  // non-image object arrives and is quarantined with a reason instead of vanishing at
  // negotiation. (dcmtk's configuration profiles hold at most 128 contexts; there are more
  // storage classes, so they are accepted here as storescp does.)
  OFCondition negotiateAssociation() override {
    if (!requested_) return DIMSE_ILLEGALASSOCIATION;
    const char *uncompressed[] = {UID_LittleEndianExplicitTransferSyntax,
                                  UID_LittleEndianImplicitTransferSyntax};
    const char *verification[] = {UID_VerificationSOPClass};
    OFCondition result = ASC_acceptContextsWithPreferredTransferSyntaxes(
        requested_, verification, 1, uncompressed, 2);
    if (result.good())
      result = ASC_acceptContextsWithPreferredTransferSyntaxes(
          requested_, dcmAllStorageSOPClassUIDs, numberOfDcmAllStorageSOPClassUIDs,
          TRANSFER_SYNTAXES, static_cast<int>(sizeof TRANSFER_SYNTAXES / sizeof *TRANSFER_SYNTAXES));
    return result;
  }

  OFBool stopAfterCurrentAssociation() override { return OFTrue; }
  OFBool stopAfterConnectionTimeout() override { return OFTrue; }

 private:
  std::string peer_;
  std::string calling_;
  std::string receiving_;
  unsigned long count_ = 0;
  T_ASC_Parameters *requested_ = nullptr;
  Lander lander_;
};

// A connection over the association limit, in a process of its own: it reads the
// association request (after the TLS handshake, on the TLS port) and answers rejected
// transient, local limit exceeded (see serve).
class RefusingSCP : public DcmSCP {
 protected:
  void notifyAssociationRequest(const T_ASC_Parameters &, DcmSCPActionType &action) override {
    alarm(0);  // the request arrived in time: answer it
    action = DCMSCP_ACTION_REFUSE_ASSOCIATION;
  }
  void refuseAssociation(const DcmRefuseReasonType) override {
    DcmSCP::refuseAssociation(DCMSCP_TOO_MANY_ASSOCIATIONS);
  }
  OFBool stopAfterCurrentAssociation() override { return OFTrue; }
  OFBool stopAfterConnectionTimeout() override { return OFTrue; }
};


// the port a child's DcmSCP is configured with: any port of 1024 or more (nothing binds it)
constexpr Uint16 kAdoptedPort = 11112;

bool configure(DcmSCPConfig &config, DcmTLSTransportLayer *tls) {
  config.setAETitle(g_settings.ae_title.c_str());
  // The connection is accepted already (dcmExternalSocketHandle): the child binds no port.
  // Its port is still checked by DcmSCP::listen, which refuses any port under 1024 unless the
  // process is root ("No privileges to open this network port"): the box's service user
  // (clinibox.service, User=clinibox) would see every association end there. So it names an
  // unprivileged port, which nothing binds.
  config.setPort(kAdoptedPort);
  // dcmtk receives PDUs of at most 128 KB (ASC_MAXIMUMPDUSIZE): a larger setting is capped
  unsigned long pdu = g_settings.max_pdu;
  if (pdu > ASC_MAXIMUMPDUSIZE) pdu = ASC_MAXIMUMPDUSIZE;
  if (pdu < ASC_MINIMUMPDUSIZE) pdu = ASC_MINIMUMPDUSIZE;
  config.setMaxReceivePDULength(static_cast<Uint32>(pdu));
  config.setACSETimeout(static_cast<Uint32>(g_settings.acse_timeout));
  config.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  config.setDIMSETimeout(static_cast<Uint32>(g_settings.dimse_timeout));
  config.setConnectionBlockingMode(DUL_NOBLOCK);
  config.setConnectionTimeout(static_cast<Uint32>(g_settings.acse_timeout));
  config.setHostLookupEnabled(OFFalse);
  config.setProgressNotificationMode(OFTrue);
  if (tls) config.setTransportLayer(tls);
  OFList<OFString> uncompressed;
  uncompressed.push_back(UID_LittleEndianExplicitTransferSyntax);
  uncompressed.push_back(UID_LittleEndianImplicitTransferSyntax);
  return config.addPresentationContext(UID_VerificationSOPClass, uncompressed).good();
}

DcmTLSTransportLayer *tls_layer() {
  if (g_settings.tls_cert.empty()) return nullptr;
  auto *layer = new DcmTLSTransportLayer(NET_ACCEPTOR, nullptr, OFTrue);
  bool ok = layer->setTLSProfile(TSP_Profile_BCP195).good() &&
            layer->activateCipherSuites().good();
  layer->setCertificateVerification(g_settings.tls_ca.empty() ? DCV_ignoreCertificate
                                                              : DCV_requireCertificate);
  if (ok && !g_settings.tls_ca.empty())
    ok = layer->addTrustedCertificateFile(g_settings.tls_ca.c_str(), DCF_Filetype_PEM).good();
  ok = ok && layer->setPrivateKeyFile(g_settings.tls_key.c_str(), DCF_Filetype_PEM).good() &&
       layer->setCertificateFile(g_settings.tls_cert.c_str(), DCF_Filetype_PEM).good() &&
       layer->checkPrivateKeyMatchesCertificate();
  if (!ok) {
    say("ERROR", "TLS: the certificate, key or CA could not be loaded");
    delete layer;
    exit(2);
  }
  return layer;
}

// Run one SCP on the accepted connection until its one association ends.
void listen_once(DcmSCP &scp, DcmTLSTransportLayer *tls, const std::string &peer) {
  if (!configure(scp.getConfig(), tls)) {
    say("ERROR", "presentation contexts could not be set up");
    _exit(2);
  }
  OFCondition result = scp.listen();
  if (result.bad() && result != NET_EC_StopAfterAssociation &&
      result != NET_EC_StopAfterConnectionTimeout)
    say("INFO", "association from " + peer + " ended: " + result.text());
}

// The child: handle the one association on the accepted connection (or, with ``refuse``,
// refuse it: a connection over the limit), then end.
[[noreturn]] void serve_association(int connection, const std::string &peer,
                                    bool refuse = false) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGTERM, SIG_DFL);
  expect_request_within_acse_timeout(peer);
  dcmExternalSocketHandle.set(connection);
  DcmTLSTransportLayer *tls = tls_layer();
  if (refuse) {
    RefusingSCP scp;
    listen_once(scp, tls, peer);
  } else {
    AssociationSCP scp(peer);
    listen_once(scp, tls, peer);
  }
  close(connection);
  _exit(0);
}

std::string address_of(const sockaddr_storage &address) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in &>(address).sin_addr, text,
              sizeof text);
  else if (address.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 &>(address).sin6_addr, text,
              sizeof text);
  return text;
}

int listen_on(const std::string &host, int port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
  std::string service = std::to_string(port);
  if (getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0 || !found) return -1;
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  bool ok = fd >= 0 && bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, 64) == 0;
  freeaddrinfo(found);
  if (!ok) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// Remove what a child left half written (it was killed, or crashed, mid-transfer).
void remove_leftovers(pid_t child) {
  std::string prefix = std::string(RECEIVING_PREFIX) + std::to_string(child) + "-";
  DIR *folder = opendir(g_settings.receive_dir.c_str());
  if (!folder) return;
  while (dirent *entry = readdir(folder))
    if (strncmp(entry->d_name, prefix.c_str(), prefix.size()) == 0)
      unlink((g_settings.receive_dir + "/" + entry->d_name).c_str());
  closedir(folder);
}

// A connection over the association limit is answered as pynetdicom answers it: a process
// of its own (RefusingSCP, on the plain port and inside TLS alike) reads the association
// request and sends A-ASSOCIATE-RJ "rejected transient, service provider (presentation),
// local limit exceeded" (PS3.8 9.3.4). A modality then knows the box is busy and retries
// later, rather than meeting a dropped connection. Bounded: at most max_associations
// refusing processes at once (beyond that the connection is closed), each ended by the
// ACSE timeout at the latest.
//
// Fair slots: no small set of addresses can hold every slot. When only one slot is free,
// it goes only to an address that holds no association; an address that holds one or more
// is rejected the same way (transient, local limit exceeded), so a third modality still
// gets in while two others hold all they may (firmware_app/settings/dicom.py).

int serve(int listener) {
  std::map<pid_t, std::string> children;  // pid -> peer address
  std::map<std::string, int> held;        // peer address -> associations
  std::set<pid_t> refusing;               // connections over the limit, being answered
  while (!g_stop) {
    pid_t child;
    int status;
    while ((child = waitpid(-1, &status, WNOHANG)) > 0) {
      if (refusing.erase(child)) continue;
      auto it = children.find(child);
      if (it == children.end()) continue;
      if (--held[it->second] <= 0) held.erase(it->second);
      if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0))
        remove_leftovers(child);
      if (WIFSIGNALED(status))
        say("ERROR", "the association from " + it->second + " ended with signal " +
                         std::to_string(WTERMSIG(status)));
      children.erase(it);
    }
    pollfd ready{listener, POLLIN, 0};
    if (poll(&ready, 1, 200) <= 0 || !(ready.revents & POLLIN)) continue;
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    int connection = accept4(listener, reinterpret_cast<sockaddr *>(&address), &length, 0);
    if (connection < 0) continue;
    std::string peer = address_of(address);
    if (held[peer] >= g_settings.max_per_peer) {  // one address hogging the port: dropped
      say("WARNING", "connection from " + peer + " refused: it already holds " +
                         std::to_string(held[peer]) + " associations");
      close(connection);
      continue;
    }
    int taken = static_cast<int>(children.size());
    bool full = taken >= g_settings.max_associations;
    // the last free slot is kept for an address that holds none (fair slots, above)
    bool last_kept = taken == g_settings.max_associations - 1 && held[peer] > 0;
    if (full || last_kept) {
      say("WARNING", "association from " + peer + " rejected: " +
                         (full ? std::string("every association slot is taken")
                               : "the last free slot is kept for an address that holds none; "
                                 "it holds " + std::to_string(held[peer])));
      if (held[peer] == 0) held.erase(peer);
      if (static_cast<int>(refusing.size()) < g_settings.max_associations) {
        child = fork();
        if (child == 0) {
          close(listener);
          serve_association(connection, peer, true);
        }
        if (child > 0) refusing.insert(child);
      }
      close(connection);
      continue;
    }
    int on = 1;
    setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    child = fork();
    if (child == 0) {
      close(listener);
      serve_association(connection, peer);
    }
    close(connection);
    if (child < 0) {
      say("ERROR", std::string("cannot start an association process: ") + strerror(errno));
      continue;
    }
    children[child] = peer;
    held[peer] += 1;
  }
  for (auto &entry : children) kill(entry.first, SIGTERM);
  for (auto &entry : children) {
    waitpid(entry.first, nullptr, 0);
    remove_leftovers(entry.first);
  }
  return 0;
}

bool parse(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i], value = argv[i + 1];
    if (key == "--host") g_settings.host = value;
    else if (key == "--port") g_settings.port = atoi(value.c_str());
    else if (key == "--ae-title") g_settings.ae_title = value;
    else if (key == "--allow-calling") g_settings.allowed_calling.push_back(value);
    else if (key == "--max-associations") g_settings.max_associations = atoi(value.c_str());
    else if (key == "--max-per-peer") g_settings.max_per_peer = atoi(value.c_str());
    else if (key == "--max-pdu") g_settings.max_pdu = strtoul(value.c_str(), nullptr, 10);
    else if (key == "--max-object") g_settings.max_object = strtoull(value.c_str(), nullptr, 10);
    else if (key == "--acse-timeout") g_settings.acse_timeout = atoi(value.c_str());
    else if (key == "--dimse-timeout") g_settings.dimse_timeout = atoi(value.c_str());
    else if (key == "--receive-dir") g_settings.receive_dir = value;
    else if (key == "--landing") g_settings.landing = value;
    else if (key == "--tls-cert") g_settings.tls_cert = value;
    else if (key == "--tls-key") g_settings.tls_key = value;
    else if (key == "--tls-ca") g_settings.tls_ca = value;
    else return false;
  }
  return argc % 2 == 1 && !g_settings.receive_dir.empty() && !g_settings.landing.empty() &&
         g_settings.port > 0 && g_settings.port < 65536 && g_settings.max_associations > 0 &&
         g_settings.max_per_peer > 0 && g_settings.acse_timeout > 0 &&
         g_settings.dimse_timeout > 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (!parse(argc, argv)) {
    fprintf(stderr, "usage: clinibox-receiver --receive-dir DIR --landing SOCKET "
                    "[--host H] [--port P] [--ae-title T] ... (see the source)\n");
    return 2;
  }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);  // the service's end is ours (even by SIGKILL)
  if (getppid() != parent) return 0;
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  umask(0077);  // received data sets are private to the service's user, as the spool's files
  struct sigaction stop{};
  stop.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGTERM, &stop, nullptr);
  sigaction(SIGINT, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (!g_settings.tls_cert.empty()) delete tls_layer();  // fail now, not per association
  int listener = listen_on(g_settings.host, g_settings.port);
  if (listener < 0) {
    fprintf(stderr, "ERROR cannot listen on %s:%d: %s\n", g_settings.host.c_str(),
            g_settings.port, strerror(errno));
    return 1;
  }
  printf("READY %d\n", g_settings.port);
  fflush(stdout);
  return serve(listener);
}
