// Skyfill's Dolphin overlay-icon plugin: the cache of file states, what is asked of the daemon
// and when, and the state -> emblem mapping (that of skyfill_nautilus.py, name for name).
// Dolphin calls getOverlays() on its UI thread for every item it shows: it is answered from
// the cache; a folder is listed once (a page of 1,000 entries per request), and the daemon's
// pushed state events keep the cache current. Files are never opened or read (that would
// download them): the daemon's index is the only source.
#include "skyfilloverlayplugin.h"

#include "daemonclient.h"

#include <QDir>
#include <QJsonArray>

#include <iterator>
#include <utility>

namespace
{
// Entries per list_page request (the daemon's most).
constexpr int PageSize = 1000;
// Past this many cached paths the cache starts over (Dolphin asks again for what it shows).
constexpr int MostEntries = 200000;
// How long file events gather before the folders above them are asked for again.
constexpr int RecheckDelayMs = 500;

QString text(const QJsonObject &o, const char *key)
{
    return o.value(QLatin1String(key)).toString();
}

// The folder holding `path` (string work only: nothing on disk is looked at).
QString parentOf(const QString &path)
{
    const int slash = path.lastIndexOf(QLatin1Char('/'));
    return slash <= 0 ? QStringLiteral("/") : path.left(slash);
}

QString withoutTrailingSlash(QString path)
{
    while (path.size() > 1 && path.endsWith(QLatin1Char('/'))) {
        path.chop(1);
    }
    return path;
}
}

SkyfillOverlayPlugin::SkyfillOverlayPlugin(QObject *parent)
    : KOverlayIconPlugin(parent)
    , m_client(new DaemonClient(this))
{
    connect(m_client, &DaemonClient::ready, this, &SkyfillOverlayPlugin::onReady);
    connect(m_client, &DaemonClient::lost, this, &SkyfillOverlayPlugin::onLost);
    connect(m_client, &DaemonClient::answered, this, &SkyfillOverlayPlugin::onAnswer);
    connect(m_client, &DaemonClient::event, this, &SkyfillOverlayPlugin::onEvent);
    m_recheckTimer.setSingleShot(true);
    connect(&m_recheckTimer, &QTimer::timeout, this, [this] {
        const QSet<QString> folders = std::exchange(m_recheck, {});
        for (const QString &f : folders) {
            requestStatus(f);
        }
    });
}

QStringList SkyfillOverlayPlugin::emblemsFor(const QJsonObject &status)
{
    static const QHash<QString, QString> emblems{
        {QStringLiteral("online-only"), QStringLiteral("emblem-skyfill-cloud")},
        {QStringLiteral("partial"), QStringLiteral("emblem-skyfill-partial")},
        {QStringLiteral("local"), QStringLiteral("emblem-skyfill-local")},
        {QStringLiteral("pinned"), QStringLiteral("emblem-skyfill-pinned")},
    };
    static const QHash<QString, QString> syncEmblems{
        {QStringLiteral("pending"), QStringLiteral("emblem-synchronizing")},
        {QStringLiteral("uploading"), QStringLiteral("emblem-synchronizing")},
        {QStringLiteral("conflict"), QStringLiteral("emblem-skyfill-conflict")},
        {QStringLiteral("error"), QStringLiteral("emblem-important")},
    };
    QStringList out;
    if (status.isEmpty()) {
        return out;
    }
    if (text(status, "kind") == QLatin1String("file")) {
        const QString e = emblems.value(text(status, "state"));
        if (!e.isEmpty()) {
            out.append(e);
        }
    } else if (text(status, "setting") == QLatin1String("pinned")) {
        out.append(emblems.value(QStringLiteral("pinned")));
    }
    const QString s = syncEmblems.value(text(status, "sync"));
    if (!s.isEmpty()) {
        out.append(s);
    }
    return out;
}

QStringList SkyfillOverlayPlugin::getOverlays(const QUrl &item)
{
    if (!item.isLocalFile()) {
        return {};
    }
    const QString path = QDir::cleanPath(item.toLocalFile());
    if (path.isEmpty()) {
        return {};
    }
    m_client->ensureConnected();
    if (m_rootsKnown && rootOf(path).isEmpty()) {
        m_shown.remove(path);
        return {};
    }
    trim();
    const QStringList emblems = current(path);
    m_shown.insert(path, emblems);
    if (!m_status.contains(path) && m_rootsKnown) {
        resolve(path);
    }
    // Before the roots are known: every path Dolphin was told about is resolved when they are.
    return emblems;
}

bool SkyfillOverlayPlugin::isSettled(const QUrl &item) const
{
    if (!item.isLocalFile()) {
        return true;
    }
    const QString path = QDir::cleanPath(item.toLocalFile());
    return m_rootsKnown && (rootOf(path).isEmpty() || m_status.contains(path));
}

void SkyfillOverlayPlugin::onReady()
{
    // Events first, so that nothing changing between a listing and the subscription is missed
    // (the daemon takes subscribe before it reads the next request).
    m_client->send(QStringLiteral("subscribe"));
    refresh();
}

void SkyfillOverlayPlugin::onLost()
{
    // Requests on the old connection get no answer; the cache stays on show until the
    // reconnection's refresh answers again.
    m_pending.clear();
    m_listing.clear();
    m_statusAsked.clear();
    m_rootsAsked = false;
}

void SkyfillOverlayPlugin::refresh()
{
    for (auto it = m_status.cbegin(); it != m_status.cend(); ++it) {
        if (!it.value().isEmpty()) {
            m_stale.insert(it.key(), it.value());
        }
    }
    m_status.clear();
    m_listed.clear();
    m_reached.clear();
    m_waiting.clear();
    m_listing.clear();
    m_statusAsked.clear();
    m_pending.clear();
    m_rootsAsked = false;
    askRoots();
}

void SkyfillOverlayPlugin::askRoots()
{
    if (m_rootsAsked) {
        return;
    }
    const quint64 id = m_client->send(QStringLiteral("roots"));
    if (id != 0) {
        m_rootsAsked = true;
        m_pending.insert(id, Pending{Kind::Roots, QString()});
    }
}

QString SkyfillOverlayPlugin::rootOf(const QString &path) const
{
    for (const QString &r : m_roots) {
        if (path == r || path.startsWith(r == QLatin1String("/") ? r : r + QLatin1Char('/'))) {
            return r;
        }
    }
    return QString();
}

void SkyfillOverlayPlugin::resolve(const QString &path)
{
    if (!m_client->isReady() || m_status.contains(path)) {
        return;
    }
    const QString root = rootOf(path);
    if (root.isEmpty()) {
        return;
    }
    const QString folder = parentOf(path);
    if (path == root || m_listed.contains(folder)) {
        // The root itself (its folder is outside), or a name its folder's listing did not have
        // (new since, or one the daemon leaves out).
        requestStatus(path);
        return;
    }
    m_waiting[folder].insert(path);
    requestPage(folder);
}

void SkyfillOverlayPlugin::requestPage(const QString &folder)
{
    if (m_listing.contains(folder)) {
        return;
    }
    const int offset = m_reached.value(folder, 0);
    quint64 id;
    if (m_paged) {
        id = m_client->send(QStringLiteral("list_page"),
                            QJsonObject{
                                {QStringLiteral("path"), folder},
                                {QStringLiteral("offset"), offset},
                                {QStringLiteral("limit"), PageSize},
                            });
    } else {
        id = m_client->send(QStringLiteral("list"), QJsonObject{{QStringLiteral("path"), folder}});
    }
    if (id != 0) {
        m_listing.insert(folder);
        m_pending.insert(id, Pending{m_paged ? Kind::Page : Kind::List, folder, offset});
    }
}

void SkyfillOverlayPlugin::requestStatus(const QString &path)
{
    if (m_statusAsked.contains(path)) {
        return;
    }
    const quint64 id = m_client->send(QStringLiteral("status"), QJsonObject{{QStringLiteral("path"), path}});
    if (id != 0) {
        m_statusAsked.insert(path);
        m_pending.insert(id, Pending{Kind::Status, path});
    }
}

void SkyfillOverlayPlugin::onAnswer(quint64 id, bool ok, const QJsonValue &result, const QString &code)
{
    const auto it = m_pending.constFind(id);
    if (it == m_pending.cend()) {
        return; // subscribe's answer, or a request from before a refresh
    }
    const Pending p = it.value();
    m_pending.erase(it);
    switch (p.kind) {
    case Kind::Roots: {
        m_rootsAsked = false;
        m_roots.clear();
        const QJsonArray roots = result.toArray();
        for (const QJsonValue &r : roots) {
            const QString local = withoutTrailingSlash(text(r.toObject(), "local"));
            if (!local.isEmpty()) {
                m_roots.append(local);
            }
        }
        m_rootsKnown = true;
        const QStringList asked = m_shown.keys();
        for (const QString &path : asked) {
            if (rootOf(path).isEmpty()) {
                // Not (or no longer) in a sync folder: no emblem.
                const QStringList was = m_shown.take(path);
                m_stale.remove(path);
                if (!was.isEmpty()) {
                    Q_EMIT overlaysChanged(QUrl::fromLocalFile(path), QStringList());
                }
            } else {
                resolve(path);
            }
        }
        break;
    }
    case Kind::Page:
    case Kind::List: {
        m_listing.remove(p.path);
        if (!ok) {
            if (p.kind == Kind::Page && code == QLatin1String("bad_request")) {
                // A daemon from before list_page: it closes the connection; the
                // reconnection's refresh lists whole folders.
                m_paged = false;
                requestPage(p.path);
                return;
            }
            // The folder cannot be listed (gone, or no longer in a root): what waited for it
            // gets no emblem.
            m_listed.insert(p.path);
            const QSet<QString> waiting = m_waiting.take(p.path);
            for (const QString &w : waiting) {
                store(w, QJsonObject());
            }
            return;
        }
        const QJsonArray entries = p.kind == Kind::Page ? result.toObject().value(QStringLiteral("entries")).toArray() : result.toArray();
        for (const QJsonValue &e : entries) {
            const QJsonObject status = e.toObject();
            const QString path = text(status, "path");
            if (!path.isEmpty()) {
                store(path, status);
            }
        }
        const int reached = p.offset + int(entries.size());
        m_reached.insert(p.path, reached);
        const bool done = p.kind == Kind::List || entries.isEmpty() || reached >= result.toObject().value(QStringLiteral("total")).toInt();
        if (done) {
            m_listed.insert(p.path);
        }
        auto w = m_waiting.find(p.path);
        if (w == m_waiting.end()) {
            break;
        }
        for (auto i = w->begin(); i != w->end();) {
            i = m_status.contains(*i) ? w->erase(i) : std::next(i);
        }
        if (w->isEmpty()) {
            m_waiting.erase(w);
        } else if (done) {
            const QSet<QString> rest = *w;
            m_waiting.erase(w);
            for (const QString &path : rest) {
                requestStatus(path);
            }
        } else {
            requestPage(p.path); // what Dolphin asked about is further down the folder
        }
        break;
    }
    case Kind::Status:
        m_statusAsked.remove(p.path);
        store(p.path, ok ? result.toObject() : QJsonObject());
        break;
    }
}

void SkyfillOverlayPlugin::onEvent(const QJsonObject &event)
{
    const QString kind = text(event, "event");
    if (kind == QLatin1String("state")) {
        const QString path = text(event, "path");
        if (path.isEmpty()) {
            return;
        }
        if (!m_status.contains(path) && !m_stale.contains(path) && !m_shown.contains(path)) {
            return; // not on show: its folder's listing brings it when it is
        }
        QJsonObject status = m_status.value(path, m_stale.value(path));
        if (status.isEmpty()) {
            status = QJsonObject{
                {QStringLiteral("path"), path},
                {QStringLiteral("kind"), QStringLiteral("file")},
                {QStringLiteral("setting"), QStringLiteral("inherit")},
            };
        }
        for (const char *key : {"state", "sync", "size", "local_bytes"}) {
            status.insert(QLatin1String(key), event.value(QLatin1String(key)));
        }
        store(path, status);
        recheckFolders(path);
    } else if (kind == QLatin1String("lagged") || (kind == QLatin1String("root") && text(event, "change") != QLatin1String("state"))) {
        // Events were missed, or a root came, went, paused or resumed: ask for everything again.
        // (A root's own state, a pass starting or ending, changes no file's emblem.)
        refresh();
    }
}

void SkyfillOverlayPlugin::recheckFolders(const QString &path)
{
    const QString root = rootOf(path);
    if (root.isEmpty() || path == root) {
        return;
    }
    QString folder = path;
    do {
        folder = parentOf(folder);
        if (m_shown.contains(folder)) {
            m_recheck.insert(folder);
        }
    } while (folder != root && folder != QLatin1String("/"));
    if (!m_recheck.isEmpty() && !m_recheckTimer.isActive()) {
        m_recheckTimer.start(RecheckDelayMs);
    }
}

void SkyfillOverlayPlugin::store(const QString &path, const QJsonObject &status)
{
    m_status.insert(path, status);
    m_stale.remove(path);
    notify(path);
}

void SkyfillOverlayPlugin::notify(const QString &path)
{
    const auto it = m_shown.find(path);
    if (it == m_shown.end()) {
        return;
    }
    const QStringList emblems = current(path);
    if (emblems != it.value()) {
        it.value() = emblems;
        Q_EMIT overlaysChanged(QUrl::fromLocalFile(path), emblems);
    }
}

QStringList SkyfillOverlayPlugin::current(const QString &path) const
{
    const auto it = m_status.constFind(path);
    if (it != m_status.cend()) {
        return emblemsFor(it.value());
    }
    return emblemsFor(m_stale.value(path));
}

void SkyfillOverlayPlugin::trim()
{
    if (m_status.size() + m_stale.size() < MostEntries && m_shown.size() < MostEntries) {
        return;
    }
    m_status.clear();
    m_stale.clear();
    m_shown.clear();
    m_listed.clear();
    m_reached.clear();
    m_waiting.clear();
}
