// skyfill-dolphin-probe: loads the overlay plugin the way Dolphin does (found by
// KPluginMetaData::findPlugins in a kf5/overlayicon folder, QPluginLoader, qobject_cast to
// KOverlayIconPlugin), asks it for the emblems of each path given, waits for its answers
// (overlaysChanged) and prints one line per path: PATH<TAB>EMBLEM,EMBLEM (none: empty).
// With --follow SECONDS it then prints a line "--" and, for that long, PATH<TAB>EMBLEMS for
// every change the plugin reports (what Dolphin would redraw). Used by tests/filemanager.rs.
#include <KOverlayIconPlugin>
#include <KPluginMetaData>

#include <QCoreApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QPluginLoader>
#include <QTextStream>
#include <QTimer>
#include <QUrl>

namespace
{
QTextStream &out()
{
    static QTextStream s(stdout);
    return s;
}

QTextStream &err()
{
    static QTextStream s(stderr);
    return s;
}

int usage()
{
    err() << "usage: skyfill-dolphin-probe [--timeout SECONDS] [--follow SECONDS] PLUGIN.so PATH...\n";
    return 2;
}

int fail(const QString &message)
{
    err() << "skyfill-dolphin-probe: " << message << Qt::endl;
    return 1;
}

QString line(KOverlayIconPlugin *plugin, const QString &path)
{
    return path + QLatin1Char('\t') + plugin->getOverlays(QUrl::fromLocalFile(path)).join(QLatin1Char(','));
}
}

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    QStringList args = app.arguments().mid(1);
    int timeoutSecs = 20;
    int followSecs = 0;
    while (!args.isEmpty() && args.first().startsWith(QLatin1String("--"))) {
        const QString opt = args.takeFirst();
        if (args.isEmpty()) {
            return usage();
        }
        bool ok = false;
        const int value = args.takeFirst().toInt(&ok);
        if (!ok || value < 0) {
            return usage();
        }
        if (opt == QLatin1String("--timeout")) {
            timeoutSecs = value;
        } else if (opt == QLatin1String("--follow")) {
            followSecs = value;
        } else {
            return usage();
        }
    }
    if (args.size() < 2) {
        return usage();
    }
    const QString file = QFileInfo(args.takeFirst()).absoluteFilePath();
    const QStringList paths = args;

    // Dolphin's way in: KPluginMetaData::findPlugins("kf5/overlayicon") over the plugin paths,
    // which skips files without JSON metadata.
    const QDir folder = QFileInfo(file).dir();
    if (!folder.absolutePath().endsWith(QLatin1String("/kf5/overlayicon"))) {
        return fail(QStringLiteral("%1 is not in a kf5/overlayicon folder: Dolphin would not find it").arg(file));
    }
    QDir base = folder;
    base.cdUp();
    base.cdUp();
    QCoreApplication::addLibraryPath(base.absolutePath());
    KPluginMetaData found;
    const QVector<KPluginMetaData> plugins = KPluginMetaData::findPlugins(QStringLiteral("kf5/overlayicon"));
    for (const KPluginMetaData &md : plugins) {
        if (QFileInfo(md.fileName()).canonicalFilePath() == QFileInfo(file).canonicalFilePath()) {
            found = md;
        }
    }
    if (!found.isValid()) {
        return fail(QStringLiteral("KPluginMetaData::findPlugins(\"kf5/overlayicon\") does not list %1 (no such file, not a Qt plugin, "
                                   "or no JSON metadata)")
                        .arg(file));
    }
    err() << "plugin: " << found.fileName() << "\nmetadata Id: " << found.pluginId() << "\nmetadata Name: " << found.name() << Qt::endl;

    QPluginLoader loader(found.fileName());
    QObject *instance = loader.instance();
    if (!instance) {
        return fail(QStringLiteral("the plugin does not load: %1").arg(loader.errorString()));
    }
    auto *plugin = qobject_cast<KOverlayIconPlugin *>(instance);
    if (!plugin) {
        return fail(QStringLiteral("the plugin's instance (%1) is not a KOverlayIconPlugin").arg(QLatin1String(instance->metaObject()->className())));
    }

    const auto settled = [&] {
        for (const QString &p : paths) {
            bool yes = false;
            if (!QMetaObject::invokeMethod(plugin, "isSettled", Qt::DirectConnection, Q_RETURN_ARG(bool, yes), Q_ARG(QUrl, QUrl::fromLocalFile(p)))
                || !yes) {
                return false;
            }
        }
        return true;
    };
    bool reporting = false;
    QObject::connect(plugin, &KOverlayIconPlugin::overlaysChanged, &app, [&](const QUrl &url, const QStringList &) {
        // Dolphin asks again when told (KFileItemModelRolesUpdater::slotOverlaysChanged).
        if (reporting) {
            out() << line(plugin, url.toLocalFile()) << Qt::endl;
        }
    });
    for (const QString &p : paths) {
        plugin->getOverlays(QUrl::fromLocalFile(p));
    }

    QElapsedTimer clock;
    clock.start();
    QTimer poll;
    int status = 0;
    QObject::connect(&poll, &QTimer::timeout, &app, [&] {
        const bool done = settled();
        if (!done && clock.elapsed() < timeoutSecs * 1000LL) {
            return;
        }
        poll.stop();
        if (!done) {
            QStringList waiting;
            for (const QString &p : paths) {
                bool yes = false;
                QMetaObject::invokeMethod(plugin, "isSettled", Qt::DirectConnection, Q_RETURN_ARG(bool, yes), Q_ARG(QUrl, QUrl::fromLocalFile(p)));
                if (!yes) {
                    waiting.append(p);
                }
            }
            err() << "skyfill-dolphin-probe: no answer from the daemon within " << timeoutSecs << " s for: " << waiting.join(QStringLiteral(", "))
                  << Qt::endl;
            status = 3;
        }
        for (const QString &p : paths) {
            out() << line(plugin, p) << Qt::endl;
        }
        if (status != 0 || followSecs == 0) {
            app.exit(status);
            return;
        }
        out() << "--" << Qt::endl;
        reporting = true;
        QTimer::singleShot(followSecs * 1000, &app, [&] { app.exit(0); });
    });
    poll.start(20);
    const int rc = app.exec();
    // The plugin stays loaded until the process ends, as in Dolphin.
    return rc;
}
