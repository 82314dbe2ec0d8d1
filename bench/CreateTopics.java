// bench/CreateTopics.java: creates Kafka topics (the broker of `make bench`
// does not auto-create them) for the Kafka Connect sink runs of bench/connect.sh.
// Run as a single-file program on Connect's classpath:
//   java -cp CLASSPATH bench/CreateTopics.java BROKERS PARTITIONS TOPIC...
// An existing topic is left as it is.
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        int partitions = Integer.parseInt(args[1]);
        List<NewTopic> topics = new ArrayList<>();
        for (int i = 2; i < args.length; i++)
            topics.add(new NewTopic(args[i], partitions, (short) 1));
        try (Admin admin = Admin.create(p)) {
            for (var e : admin.createTopics(topics).values().entrySet()) {
                try {
                    e.getValue().get();
                } catch (ExecutionException ex) {
                    if (!(ex.getCause() instanceof TopicExistsException))
                        throw ex;
                }
            }
        }
    }
}
