// The Dolphin plugin's one connection to skyfilld (doc/IPC.md): a non-blocking QLocalSocket,
// newline-delimited JSON, the hello handshake, requests matched to answers by id, pushed
// events, and reconnection with backoff when the daemon goes away. Nothing here waits.
#pragma once

#include <QByteArray>
#include <QJsonObject>
#include <QJsonValue>
#include <QLocalSocket>
#include <QLoggingCategory>
#include <QObject>
#include <QString>
#include <QTimer>

Q_DECLARE_LOGGING_CATEGORY(SKYFILL_DOLPHIN)

class DaemonClient : public QObject
{
    Q_OBJECT
public:
    // The protocol version this client speaks (doc/IPC.md).
    static constexpr int ProtocolVersion = 1;

    explicit DaemonClient(QObject *parent = nullptr);

    // SKYFILL_SOCKET, else /run/skyfill/skyfill.sock.
    static QString socketPath();

    // Starts connecting unless connected, connecting, or waiting to retry.
    void ensureConnected();
    // True once the handshake is done and until the connection goes away.
    bool isReady() const;
    // Sends request `op` with `args` (only when ready); returns its id, 0 when not sent.
    quint64 send(const QString &op, QJsonObject args = {});

Q_SIGNALS:
    // The handshake succeeded (on the first connection and on every reconnection).
    void ready();
    // A ready connection went away: requests sent on it will get no answer.
    void lost();
    // The answer to request `id`: ok with `result`, or an error `code` (doc/IPC.md).
    void answered(quint64 id, bool ok, const QJsonValue &result, const QString &code);
    // A pushed event (a line with an "event" key).
    void event(const QJsonObject &event);

private:
    enum class State { Idle, Connecting, Greeting, Ready };

    void onConnected();
    void onReadyRead();
    void drop();
    void handleLine(const QByteArray &line);
    void write(const QJsonObject &message);
    void scheduleRetry();

    QLocalSocket *m_socket;
    QTimer m_retry;
    QByteArray m_buffer;
    State m_state = State::Idle;
    quint64 m_next = 1;
    quint64 m_helloId = 0;
    int m_backoffMs;
};
