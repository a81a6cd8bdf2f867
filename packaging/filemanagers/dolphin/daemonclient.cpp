// The Dolphin plugin's connection to skyfilld: framing, handshake, ids, events, reconnection
// (see daemonclient.h). Every socket operation is asynchronous; nothing here blocks the
// file manager's thread.
#include "daemonclient.h"

#include <QJsonDocument>
#include <QtGlobal>

#include <algorithm>

Q_LOGGING_CATEGORY(SKYFILL_DOLPHIN, "skyfill.dolphin", QtWarningMsg)

namespace
{
// The first retry after a connection fails or goes away, and the longest wait between two.
constexpr int FirstRetryMs = 250;
constexpr int LongestRetryMs = 10000;
// The daemon's lines are at most 1 MiB (doc/IPC.md); more without a newline is not the daemon.
constexpr int LongestPendingBytes = 4 * 1024 * 1024;
}

DaemonClient::DaemonClient(QObject *parent)
    : QObject(parent)
    , m_socket(new QLocalSocket(this))
    , m_backoffMs(FirstRetryMs)
{
    m_retry.setSingleShot(true);
    connect(&m_retry, &QTimer::timeout, this, &DaemonClient::ensureConnected);
    connect(m_socket, &QLocalSocket::connected, this, &DaemonClient::onConnected);
    connect(m_socket, &QLocalSocket::readyRead, this, &DaemonClient::onReadyRead);
    connect(m_socket, &QLocalSocket::disconnected, this, &DaemonClient::drop);
    connect(m_socket, &QLocalSocket::errorOccurred, this, [this](QLocalSocket::LocalSocketError e) {
        qCDebug(SKYFILL_DOLPHIN) << "socket" << socketPath() << "error" << e << m_socket->errorString();
        drop();
    });
}

QString DaemonClient::socketPath()
{
    const QString env = qEnvironmentVariable("SKYFILL_SOCKET");
    return env.isEmpty() ? QStringLiteral("/run/skyfill/skyfill.sock") : env;
}

void DaemonClient::ensureConnected()
{
    if (m_state != State::Idle || m_retry.isActive()) {
        return;
    }
    m_state = State::Connecting;
    m_buffer.clear();
    m_socket->abort();
    // A local connect does not wait: the answer (connected or an error) comes as a signal.
    m_socket->connectToServer(socketPath());
}

bool DaemonClient::isReady() const
{
    return m_state == State::Ready;
}

quint64 DaemonClient::send(const QString &op, QJsonObject args)
{
    if (m_state != State::Ready) {
        return 0;
    }
    const quint64 id = m_next++;
    args.insert(QStringLiteral("id"), qint64(id));
    args.insert(QStringLiteral("op"), op);
    write(args);
    return id;
}

void DaemonClient::onConnected()
{
    if (m_state != State::Connecting) {
        return;
    }
    m_state = State::Greeting;
    m_helloId = m_next++;
    write(QJsonObject{
        {QStringLiteral("id"), qint64(m_helloId)},
        {QStringLiteral("op"), QStringLiteral("hello")},
        {QStringLiteral("version"), ProtocolVersion},
        {QStringLiteral("client"), QStringLiteral("skyfill-dolphin")},
    });
}

void DaemonClient::onReadyRead()
{
    m_buffer += m_socket->readAll();
    int end;
    while (m_state != State::Idle && (end = m_buffer.indexOf('\n')) >= 0) {
        const QByteArray line = m_buffer.left(end);
        m_buffer.remove(0, end + 1);
        handleLine(line);
    }
    if (m_buffer.size() > LongestPendingBytes) {
        qCWarning(SKYFILL_DOLPHIN) << "a line longer than" << LongestPendingBytes << "bytes from" << socketPath() << "; reconnecting";
        drop();
    }
}

void DaemonClient::handleLine(const QByteArray &line)
{
    if (line.trimmed().isEmpty()) {
        return;
    }
    QJsonParseError err;
    const QJsonDocument doc = QJsonDocument::fromJson(line, &err);
    if (!doc.isObject()) {
        qCWarning(SKYFILL_DOLPHIN) << "not a JSON object from the daemon:" << err.errorString();
        return;
    }
    const QJsonObject msg = doc.object();
    if (msg.contains(QStringLiteral("event"))) {
        if (m_state == State::Ready) {
            Q_EMIT event(msg);
        }
        return;
    }
    const quint64 id = msg.value(QStringLiteral("id")).toVariant().toULongLong();
    const bool ok = msg.value(QStringLiteral("ok")).toBool();
    const QJsonObject error = msg.value(QStringLiteral("error")).toObject();
    if (m_state == State::Greeting) {
        if (id != m_helloId) {
            return;
        }
        const int version = msg.value(QStringLiteral("result")).toObject().value(QStringLiteral("version")).toInt();
        if (!ok || version != ProtocolVersion) {
            qCWarning(SKYFILL_DOLPHIN) << "skyfilld refused the handshake:" << error.value(QStringLiteral("code")).toString()
                                       << error.value(QStringLiteral("message")).toString();
            m_backoffMs = LongestRetryMs;
            drop();
            return;
        }
        m_state = State::Ready;
        m_backoffMs = FirstRetryMs;
        Q_EMIT ready();
        return;
    }
    Q_EMIT answered(id, ok, msg.value(QStringLiteral("result")), error.value(QStringLiteral("code")).toString());
}

void DaemonClient::write(const QJsonObject &message)
{
    m_socket->write(QJsonDocument(message).toJson(QJsonDocument::Compact) + '\n');
}

void DaemonClient::drop()
{
    if (m_state == State::Idle) {
        return; // already dropped (abort() below signals again)
    }
    const bool wasReady = m_state == State::Ready;
    m_state = State::Idle;
    m_buffer.clear();
    m_socket->abort();
    if (wasReady) {
        Q_EMIT lost();
    }
    scheduleRetry();
}

void DaemonClient::scheduleRetry()
{
    m_retry.start(m_backoffMs);
    m_backoffMs = std::min(m_backoffMs * 2, LongestRetryMs);
}
