package likestream.peers;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of {@code likestream bench ingest}: the same like-count fold as
 * likestream's worker, so its events/s can stand beside likestream's on the same records.
 *
 * <p>Semantics, as in likestream/agents/_fold.py and likestream/domain/_schema.py: a record is a
 * JSON like event keyed by its item_id; a like by a member, or an unlike by a non-member, is
 * a no-op; every other event flips the membership and moves the count by one (so a count is
 * never negative) and writes {"item_id":..,"likes":N} to the output topic. An invalid record
 * is counted and skipped. State: two changelogged RocksDB stores, "memberships" (item/user
 * -> liked) and "counts" (item -> count); processing.guarantee=exactly_once_v2.
 *
 * <p>Events are already partitioned by item_id (Kafka's murmur2, as likestream's producer
 * does), so both stores are co-partitioned with the source and nothing is repartitioned.
 *
 * <p>Usage: {@code java -jar kstreams-peer.jar BOOTSTRAP TOPIC OUTPUT_TOPIC APPLICATION_ID
 * STATE_DIR EXPECTED [NAME=VALUE...]}, where each NAME=VALUE is one more Streams property
 * (the bench passes commit.interval.ms and num.stream.threads). Twice a second, and once more when
 * stopped, it prints one JSON line on stdout: {"peer","state","processed","invalid",
 * "changes","expected","first","last","error"}, where first and last are the epoch seconds
 * of the first and the last record processed, so the bench can take the rate from the
 * program's own clock and leave JVM start-up out. It runs until SIGTERM (the bench stops it
 * once the group's committed offsets reach the end of the topic) or until Streams fails.
 */
public final class KStreamsPeer {
  static final String MEMBERSHIPS = "memberships";
  static final String COUNTS = "counts";
  static final int MAX_RECORD_BYTES = 1024;
  static final int MAX_ID = 128;
  static final int MAX_EVENT_ID = 64;
  static final byte[] LIKED = {1};
  static final byte[] NOT_LIKED = {0};

  static final AtomicLong processed = new AtomicLong();
  static final AtomicLong invalid = new AtomicLong();
  static final AtomicLong changes = new AtomicLong();
  static final AtomicLong firstNanos = new AtomicLong();
  static final AtomicLong lastNanos = new AtomicLong();
  static volatile String error = null;
  // Epoch seconds = EPOCH_BASE + nanoTime / 1e9: one clock reading, then the monotonic one.
  static final double EPOCH_BASE = System.currentTimeMillis() / 1e3 - System.nanoTime() / 1e9;

  private KStreamsPeer() {}

  /** A valid like event: the fields the fold needs. */
  record Event(String itemId, String userId, boolean like) {}

  public static void main(String[] args) throws Exception {
    if (args.length < 6) {
      System.err.println(
          "usage: kstreams-peer BOOTSTRAP TOPIC OUTPUT_TOPIC APPLICATION_ID STATE_DIR EXPECTED"
              + " [NAME=VALUE...]");
      System.exit(2);
    }
    long expected = Long.parseLong(args[5]);
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[3]);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    for (int i = 6; i < args.length; i++) {
      int eq = args[i].indexOf('=');
      if (eq <= 0) {
        System.err.println("not NAME=VALUE: " + args[i]);
        System.exit(2);
      }
      props.put(args[i].substring(0, eq), args[i].substring(eq + 1));
    }

    KafkaStreams streams = new KafkaStreams(topology(args[1], args[2]), props);
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
            stopped.countDown();
          }
        });
    streams.setUncaughtExceptionHandler(
        exc -> {
          error = exc.toString();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    Thread hook =
        new Thread(
            () -> {
              streams.close(Duration.ofSeconds(30));
              report(streams.state().name(), expected);
            });
    Runtime.getRuntime().addShutdownHook(hook);
    streams.start();
    while (!stopped.await(500, TimeUnit.MILLISECONDS)) {
      report(streams.state().name(), expected);
    }
    // Streams stopped by itself (an error): close it here, not in the hook.
    report(streams.state().name(), expected);
    if (error != null) {
      Runtime.getRuntime().removeShutdownHook(hook);
      streams.close(Duration.ofSeconds(10));
      System.exit(1);
    }
  }

  static Topology topology(String topic, String output) {
    Topology topology = new Topology();
    topology.addSource(
        "events", Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer(), topic);
    topology.addProcessor("fold", Fold::new, "events");
    topology.addStateStore(
        Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(MEMBERSHIPS), Serdes.String(), Serdes.ByteArray()),
        "fold");
    topology.addStateStore(
        Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(COUNTS), Serdes.String(), Serdes.Long()),
        "fold");
    topology.addSink(
        "counts", output, Serdes.String().serializer(), Serdes.String().serializer(), "fold");
    return topology;
  }

  /** The fold: one membership read, and on a change one count read and two writes. */
  static final class Fold implements Processor<byte[], byte[], String, String> {
    private ProcessorContext<String, String> context;
    private KeyValueStore<String, byte[]> memberships;
    private KeyValueStore<String, Long> counts;

    @Override
    public void init(ProcessorContext<String, String> context) {
      this.context = context;
      this.memberships = context.getStateStore(MEMBERSHIPS);
      this.counts = context.getStateStore(COUNTS);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
      long now = System.nanoTime();
      firstNanos.compareAndSet(0, now);
      Event event = parse(record.key(), record.value());
      if (event == null) {
        invalid.incrementAndGet();
      } else {
        String member = event.itemId() + "/" + event.userId();
        byte[] was = memberships.get(member);
        boolean liked = was != null && was[0] == 1;
        if (liked != event.like()) {
          Long count = counts.get(event.itemId());
          long likes = (count == null ? 0 : count) + (event.like() ? 1 : -1);
          counts.put(event.itemId(), likes);
          memberships.put(member, event.like() ? LIKED : NOT_LIKED);
          String value = "{\"item_id\":\"" + event.itemId() + "\",\"likes\":" + likes + "}";
          context.forward(record.withKey(event.itemId()).withValue(value));
          changes.incrementAndGet();
        }
      }
      lastNanos.set(System.nanoTime());
      processed.incrementAndGet();
    }
  }

  static final JsonFactory JSON = new JsonFactory();

  /** The event in a record, or null when likestream's parse_event would reject it. */
  static Event parse(byte[] key, byte[] value) {
    if (value == null || key == null) {
      return null;
    }
    if (value.length + key.length > MAX_RECORD_BYTES) {
      return null;
    }
    String itemId = null;
    String userId = null;
    String action = null;
    try (JsonParser parser = JSON.createParser(value)) {
      if (parser.nextToken() != JsonToken.START_OBJECT) {
        return null;
      }
      while (parser.nextToken() == JsonToken.FIELD_NAME) {
        String field = parser.currentName();
        JsonToken token = parser.nextToken();
        switch (field) {
          case "item_id" -> itemId = token == JsonToken.VALUE_STRING ? parser.getText() : null;
          case "user_id" -> userId = token == JsonToken.VALUE_STRING ? parser.getText() : null;
          case "action" -> action = token == JsonToken.VALUE_STRING ? parser.getText() : null;
          case "event_id" -> {
            if (token != JsonToken.VALUE_NULL
                && (token != JsonToken.VALUE_STRING || parser.getText().length() > MAX_EVENT_ID)) {
              return null;
            }
          }
          case "ts" -> {
            if (token != JsonToken.VALUE_NULL
                && (token != JsonToken.VALUE_NUMBER_INT || parser.getText().startsWith("-"))) {
              return null;
            }
          }
          default -> parser.skipChildren();
        }
      }
      if (parser.currentToken() != JsonToken.END_OBJECT || parser.nextToken() != null) {
        return null;
      }
    } catch (IOException exc) {
      return null;
    }
    if (!validId(itemId) || !validId(userId)) {
      return null;
    }
    boolean like = "like".equals(action);
    if (!like && !"unlike".equals(action)) {
      return null;
    }
    if (!Arrays.equals(key, itemId.getBytes(StandardCharsets.UTF_8))) {
      return null;
    }
    return new Event(itemId, userId, like);
  }

  /** 1-128 characters of [A-Za-z0-9._:@-], as likestream/domain/_schema.py is_valid_id. */
  static boolean validId(String id) {
    if (id == null || id.isEmpty() || id.length() > MAX_ID) {
      return false;
    }
    for (int i = 0; i < id.length(); i++) {
      char c = id.charAt(i);
      boolean ok =
          (c >= 'a' && c <= 'z')
              || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9')
              || c == '.'
              || c == '_'
              || c == ':'
              || c == '@'
              || c == '-';
      if (!ok) {
        return false;
      }
    }
    return true;
  }

  static double epoch(long nanos) {
    return nanos == 0 ? 0.0 : EPOCH_BASE + nanos / 1e9;
  }

  static synchronized void report(String state, long expected) {
    String err = error == null ? "null" : "\"" + error.replace("\\", "\\\\").replace("\"", "'") + "\"";
    System.out.println(
        String.format(
            java.util.Locale.ROOT,
            "{\"peer\":\"kstreams\",\"state\":\"%s\",\"processed\":%d,\"invalid\":%d,"
                + "\"changes\":%d,\"expected\":%d,\"first\":%.6f,\"last\":%.6f,\"error\":%s}",
            state,
            processed.get(),
            invalid.get(),
            changes.get(),
            expected,
            epoch(firstNanos.get()),
            epoch(lastNanos.get()),
            err.replace("\n", " ")));
    System.out.flush();
  }
}
