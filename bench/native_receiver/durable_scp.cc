// A prototype, for `bench/ingest.py` only: the box's C-STORE ack rule in a native
// receiver (dcmtk + SQLite) instead of pynetdicom, to show what issue 17's "native
// receiver front" would give on the same machine. Not part of the box.
//
// For every C-STORE, as the box's Lander does: the data set is written to a file in
// spool/tmp as it arrives, renamed to spool/<xx>/<local id>.dcm, the file and its folder
// fsync'd, the SOP Instance UID looked up (a repeat is a duplicate, not stored twice),
// a queue row committed (SQLite WAL, synchronous=FULL), and only then Success is sent.
//
//   durable_scp PORT SPOOL DATABASE [THREADS]   (THREADS > 1: one thread per association)
//
// Build (Debian: g++ libdcmtk-dev libsqlite3-dev; bench/ingest.py builds it when it can):
//   g++ -O2 -std=c++17 durable_scp.cc -o durable_scp -ldcmnet -ldcmdata -loflog -lofstd \
//       -lsqlite3 -lpthread
// Run it with TCP_NODELAY=1 in its environment on loopback, as every dcmtk tool here.

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/scp.h>
#include <dcmtk/dcmnet/scppool.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/oflog/oflog.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>

static std::string g_spool;
static sqlite3 *g_db = nullptr;
static std::mutex g_db_lock;  // one writer, as SQLite allows
static std::atomic<unsigned long> g_counter{0};

static bool fsync_path(const std::string &path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  bool ok = fsync(fd) == 0;
  close(fd);
  return ok;
}

static std::string new_local_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char text[33];
  snprintf(text, sizeof text, "%016llx%016llx", (unsigned long long)rng(),
           (unsigned long long)rng());
  return text;
}

static bool exec(const char *sql) { return sqlite3_exec(g_db, sql, nullptr, nullptr, nullptr) == SQLITE_OK; }

// The queue row, committed durably; false when the UID is held already or the commit fails.
static bool enqueue(const std::string &local_id, const std::string &path, const char *sop_uid,
                    bool *duplicate) {
  std::lock_guard<std::mutex> hold(g_db_lock);
  *duplicate = false;
  sqlite3_stmt *find = nullptr;
  sqlite3_prepare_v2(g_db, "SELECT id FROM queue WHERE sop_instance_uid = ?", -1, &find, nullptr);
  sqlite3_bind_text(find, 1, sop_uid, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(find) == SQLITE_ROW) *duplicate = true;
  sqlite3_finalize(find);
  if (*duplicate) return false;
  if (!exec("BEGIN IMMEDIATE")) return false;
  sqlite3_stmt *insert = nullptr;
  sqlite3_prepare_v2(g_db,
                     "INSERT INTO queue (local_id, spool_path, sop_instance_uid, status, "
                     "received_at) VALUES (?, ?, ?, 'queued', strftime('%s','now'))",
                     -1, &insert, nullptr);
  sqlite3_bind_text(insert, 1, local_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(insert, 2, path.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(insert, 3, sop_uid, -1, SQLITE_TRANSIENT);
  bool ok = sqlite3_step(insert) == SQLITE_DONE;
  sqlite3_finalize(insert);
  return exec(ok ? "COMMIT" : "ROLLBACK") && ok;
}

class DurableSCP : public DcmThreadSCP {
 protected:
  OFCondition handleIncomingCommand(T_DIMSE_Message *msg,
                                    const DcmPresentationContextInfo &info) override {
    if (msg->CommandField != DIMSE_C_STORE_RQ)
      return DcmThreadSCP::handleIncomingCommand(msg, info);
    T_DIMSE_C_StoreRQ &request = msg->msg.CStoreRQ;
    std::string received = g_spool + "/tmp/receiving-" + std::to_string(getpid()) + "-" +
                           std::to_string(g_counter++) + ".dcm";
    OFCondition cond = receiveSTORERequest(request, info.presentationContextID, received.c_str());
    if (cond.bad()) {
      unlink(received.c_str());
      return cond;
    }
    Uint16 status = 0x0000;
    std::string id = new_local_id();
    std::string folder = g_spool + "/" + id.substr(0, 2);
    std::string final_path = folder + "/" + id + ".dcm";
    bool duplicate = false;
    if (mkdir(folder.c_str(), 0750) == 0) fsync_path(g_spool);
    if (rename(received.c_str(), final_path.c_str()) != 0 || !fsync_path(final_path) ||
        !fsync_path(folder)) {
      status = 0xA700;  // Out of resources: the sender retries
      unlink(received.c_str());
    } else if (!enqueue(id, final_path, request.AffectedSOPInstanceUID, &duplicate)) {
      unlink(final_path.c_str());
      if (!duplicate) status = 0xA700;
    }
    return sendSTOREResponse(info.presentationContextID, request, status);
  }
};

static void configure(DcmSCPConfig &config, Uint16 port) {
  config.setPort(port);
  config.setAETitle("NATIVE");
  config.setMaxReceivePDULength(ASC_MAXIMUMPDUSIZE);  // 128 KB, dcmtk's largest
  config.setHostLookupEnabled(OFFalse);
  OFList<OFString> syntaxes;
  syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
  syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
  // Verification first: added after every storage class, echoscu found it refused
  config.addPresentationContext(UID_VerificationSOPClass, syntaxes);
  for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; ++i)
    config.addPresentationContext(dcmAllStorageSOPClassUIDs[i], syntaxes);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: durable_scp PORT SPOOL DATABASE [THREADS]\n");
    return 2;
  }
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);  // quiet, as storescp by default
  Uint16 port = static_cast<Uint16>(atoi(argv[1]));
  g_spool = argv[2];
  int threads = argc > 4 ? atoi(argv[4]) : 1;
  mkdir(g_spool.c_str(), 0750);
  mkdir((g_spool + "/tmp").c_str(), 0750);
  if (sqlite3_open(argv[3], &g_db) != SQLITE_OK) return 1;
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, local_id TEXT UNIQUE, "
       "spool_path TEXT, sop_instance_uid TEXT UNIQUE, status TEXT, received_at REAL)");
  DcmSCPPool<DurableSCP> pool;
  configure(pool.getConfig(), port);
  pool.setMaxThreads(static_cast<Uint16>(threads < 1 ? 1 : threads));
  return pool.listen().good() ? 0 : 1;
}
