// Skyfill's Dolphin overlay-icon plugin (KOverlayIconPlugin, loaded by Dolphin from the
// kf5/overlayicon plugin folder): the state emblem of each file in a sync folder, from the
// daemon's folder listings and its pushed state events, kept in a cache that getOverlays()
// answers from. The same emblems as the Nautilus extension (skyfill_nautilus.py).
#pragma once

#include <KOverlayIconPlugin>

#include <QHash>
#include <QJsonObject>
#include <QSet>
#include <QString>
#include <QStringList>
#include <QTimer>
#include <QUrl>

class DaemonClient;

class SkyfillOverlayPlugin : public KOverlayIconPlugin
{
    Q_OBJECT
    // KIO 5.103 declares no interface id for KOverlayIconPlugin and Dolphin checks none: it
    // finds plugins by folder and takes those that qobject_cast to KOverlayIconPlugin. This is
    // the id the ownCloud/Nextcloud plugins use (spelling included).
    Q_PLUGIN_METADATA(IID "com.owncloud.ovarlayiconplugin" FILE "skyfilloverlayplugin.json")

public:
    explicit SkyfillOverlayPlugin(QObject *parent = nullptr);

    // Answers from the cache at once; what is not known yet is asked of the daemon and comes
    // later as overlaysChanged(). Never touches the file itself.
    QStringList getOverlays(const QUrl &item) override;

    // Whether getOverlays(item) is a settled answer (the daemon answered for this path, or it
    // is not in a sync folder), not a placeholder while the daemon is asked. For tests.
    Q_INVOKABLE bool isSettled(const QUrl &item) const;

    // The emblems for a status (a `status`/`list` entry of doc/IPC.md).
    static QStringList emblemsFor(const QJsonObject &status);

private:
    enum class Kind { Roots, Page, List, Status };
    struct Pending {
        Kind kind;
        QString path;
        int offset = 0;
    };

    void onReady();
    void onLost();
    void onAnswer(quint64 id, bool ok, const QJsonValue &result, const QString &code);
    void onEvent(const QJsonObject &event);

    // Starts over: what is cached becomes stale (still shown) until the daemon answers again.
    void refresh();
    void askRoots();
    QString rootOf(const QString &path) const;
    // Asks the daemon for what `path` needs (its folder's listing, or its own status).
    void resolve(const QString &path);
    void requestPage(const QString &folder);
    void requestStatus(const QString &path);
    void store(const QString &path, const QJsonObject &status);
    // A file's state changed: its shown folders may have too (asked again, a moment later).
    void recheckFolders(const QString &path);
    // Tells Dolphin when what it was told for `path` changed.
    void notify(const QString &path);
    QStringList current(const QString &path) const;
    void trim();

    DaemonClient *m_client;
    bool m_rootsKnown = false;
    bool m_rootsAsked = false;
    QStringList m_roots;
    // Path -> status from the daemon (an empty object: no status, e.g. refused).
    QHash<QString, QJsonObject> m_status;
    // What was known before the last refresh: shown until the daemon answers again.
    QHash<QString, QJsonObject> m_stale;
    // Paths Dolphin asked about, and the emblems it was last given for each.
    QHash<QString, QStringList> m_shown;
    // Folder -> the asked paths in it that wait for its listing.
    QHash<QString, QSet<QString>> m_waiting;
    // Folders listed to their end; entries fetched so far; a page on its way.
    QSet<QString> m_listed;
    QHash<QString, int> m_reached;
    QSet<QString> m_listing;
    QSet<QString> m_statusAsked;
    QSet<QString> m_recheck;
    QTimer m_recheckTimer;
    QHash<quint64, Pending> m_pending;
    // The daemon answers list_page (older ones only list).
    bool m_paged = true;
};
